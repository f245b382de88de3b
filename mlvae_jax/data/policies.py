"""Group-size policies: how one epoch of examples becomes a sequence of ragged batches.

An epoch plan lists, for each batch, the rows it holds and each row's group slot. Every
policy covers each example at most once per epoch (a fresh permutation per epoch), so
training sees the whole split rather than a with-replacement sample:

- fixed k / uniform [k_min, k_max]: each group value's members are shuffled and cut into
  groups of the drawn size; a final piece smaller than k_min is left out of that epoch (a
  different one next epoch). Groups are then shuffled and packed greedily into batches of at
  most N rows and G groups; unused rows are padding.
- natural (the paper's grouping): a random batch of N examples, grouped by shared value.
- iid: a random batch of N examples, each its own group (the VAE baseline).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlvae_jax.data.errors import DataError

POLICIES = ("fixed", "uniform", "natural", "iid")


@dataclasses.dataclass(frozen=True)
class Policy:
  kind: str
  k_min: int = 1
  k_max: int = 1

  @property
  def constant_count(self) -> bool:
    """Whether every epoch has the same number of batches (all but 'uniform')."""
    return self.kind != "uniform"


@dataclasses.dataclass(frozen=True)
class Plan:
  """One epoch: batch b holds rows[offsets[b]:offsets[b+1]] in group slots slots[...]."""

  rows: np.ndarray  # int64 positions into the shard
  slots: np.ndarray  # int32 local group slot of each row, sorted within a batch
  offsets: np.ndarray  # int64 [B + 1]

  def __len__(self) -> int:
    return len(self.offsets) - 1


def policy_from_config(data_config: Any) -> Policy:
  kind = data_config.group_policy
  if kind == "fixed":
    policy = Policy(kind, int(data_config.group_size), int(data_config.group_size))
  elif kind == "uniform":
    policy = Policy(kind, int(data_config.group_size_min), int(data_config.group_size_max))
  elif kind in ("natural", "iid"):
    policy = Policy(kind)
  else:
    raise DataError(f"unknown data.group_policy={kind!r}; choose one of {', '.join(POLICIES)}")
  if not 1 <= policy.k_min <= policy.k_max:
    raise DataError(
        f"group sizes of policy {kind!r} must satisfy 1 <= k_min <= k_max, got "
        f"[{policy.k_min}, {policy.k_max}] (data.group_size / group_size_min / group_size_max)"
    )
  return policy


def check_capacity(policy: Policy, codes: np.ndarray, batch_size: int, num_groups: int,
                   where: str) -> None:
  """Raises DataError when a batch of `batch_size` rows and `num_groups` slots cannot hold
  the policy's groups, or a group value has fewer members than the policy needs."""
  if policy.kind == "iid" and num_groups < batch_size:
    raise DataError(
        f"{where}: policy 'iid' makes every row its own group, so G ({num_groups} slots) must "
        f"be >= N ({batch_size} rows); raise data.num_groups to data.batch_size"
    )
  if policy.kind == "natural":
    most = min(len(np.unique(codes)), batch_size)
    if num_groups < most:
      raise DataError(
          f"{where}: policy 'natural' can put up to {most} distinct group values in a batch "
          f"of {batch_size} rows, but G has only {num_groups} slots; raise data.num_groups"
      )
  if policy.kind in ("fixed", "uniform"):
    if batch_size < policy.k_max:
      raise DataError(
          f"{where}: a batch of N = {batch_size} rows cannot hold a group of "
          f"{policy.k_max}; raise data.batch_size or lower the group size"
      )
    values, counts = np.unique(codes, return_counts=True)
    small = values[counts < policy.k_min]
    if small.size:
      raise DataError(
          f"{where}: group values with codes {small[:8].tolist()} have fewer members "
          f"({counts[counts < policy.k_min][:8].tolist()}) than policy {policy.kind!r} needs "
          f"({policy.k_min}); lower the group size, use group_policy='natural', or list those "
          "values in data.unseen_groups"
      )


def plan_epoch(policy: Policy, codes: np.ndarray, rng: np.random.Generator, batch_size: int,
               num_groups: int, drop_remainder: bool) -> Plan:
  """The batches of one epoch over a shard whose examples have group codes `codes`."""
  if policy.kind in ("natural", "iid"):
    return _plan_random_batches(policy, codes, rng, batch_size, drop_remainder)
  return _plan_groups(policy, codes, rng, batch_size, num_groups, drop_remainder)


def _plan_random_batches(policy: Policy, codes: np.ndarray, rng: np.random.Generator,
                         batch_size: int, drop_remainder: bool) -> Plan:
  order = rng.permutation(len(codes))
  stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
  order, batch = order[:stop], np.arange(stop) // batch_size
  offsets = np.append(np.arange(0, stop, batch_size), stop)
  if policy.kind == "iid":
    return Plan(order.astype(np.int64), (np.arange(stop) % batch_size).astype(np.int32),
                offsets.astype(np.int64))
  rows = order[np.lexsort((codes[order], batch))]  # by value within a batch, stable
  values = codes[rows]
  change = np.concatenate([[0], (values[1:] != values[:-1]) & (batch[1:] == batch[:-1])])
  counted = np.cumsum(change)
  return Plan(rows.astype(np.int64), (counted - counted[offsets[:-1]][batch]).astype(np.int32),
              offsets.astype(np.int64))


def _plan_groups(policy: Policy, codes: np.ndarray, rng: np.random.Generator, batch_size: int,
                 num_groups: int, drop_remainder: bool) -> Plan:
  order = np.lexsort((rng.random(len(codes)), codes))  # by value, shuffled within a value
  _, starts, counts = np.unique(codes[order], return_index=True, return_counts=True)
  groups = np.concatenate([np.zeros((0, 2), np.int64)] + [
      _cut(policy, count, rng) + [start, 0] for start, count in zip(starts, counts)])
  groups = groups[rng.permutation(len(groups))]
  batch = _pack(groups[:, 1], batch_size, num_groups)
  if drop_remainder and len(batch):  # the last batch is still open: left out
    groups, batch = groups[batch < batch[-1]], batch[batch < batch[-1]]
  group_start, sizes = groups[:, 0], groups[:, 1]
  ends = np.cumsum(sizes)
  total = int(ends[-1]) if len(ends) else 0
  rows = order[np.repeat(group_start - (ends - sizes), sizes) + np.arange(total)]
  first_group = np.searchsorted(batch, np.arange(batch[-1] + 1 if len(batch) else 0))
  slots = np.repeat(np.arange(len(batch)) - first_group[batch], sizes)
  offsets = np.concatenate([[0], np.cumsum(np.bincount(batch, weights=sizes).astype(np.int64))])
  return Plan(rows.astype(np.int64), slots.astype(np.int32), offsets.astype(np.int64))


def _pack(sizes: np.ndarray, batch_size: int, num_groups: int) -> np.ndarray:
  """The batch of each group, packed greedily in order: a batch closes when it has G groups
  or the next group would overflow N rows. Linear in the groups; closed form for one size."""
  if len(sizes) and (sizes == sizes[0]).all():
    return np.arange(len(sizes)) // min(num_groups, batch_size // int(sizes[0]))
  batch = np.empty(len(sizes), np.int64)
  index = rows = count = 0
  for j, size in enumerate(sizes.tolist()):
    if count == num_groups or rows + size > batch_size:
      index, rows, count = index + 1, 0, 0
    batch[j], rows, count = index, rows + size, count + 1
  return batch


def _cut(policy: Policy, count: int, rng: np.random.Generator) -> np.ndarray:
  """[pieces, 2] (offset, size) of a value's `count` shuffled members; a tail < k_min is
  left out."""
  sizes = rng.integers(policy.k_min, policy.k_max + 1, size=count // policy.k_min + 1)
  ends = np.cumsum(sizes)
  ends = ends[ends <= count]
  if count - (ends[-1] if ends.size else 0) >= policy.k_min:
    ends = np.append(ends, count)
  starts = np.concatenate([[0], ends[:-1]])
  return np.stack([starts, ends - starts], axis=1).astype(np.int64)
