"""Batch layouts drawn on the devices from (seed, step): a call needs no batch from the host.

For a split kept on the devices, each step's layout (rows of the resident shard, group ids,
mask) is a pure function of (seed, split, process, step), computed inside the jitted call,
so a K-step call receives only its K step numbers. The iterator state is the step: a run
resumes bit for bit under any K. Batches are drawn without replacement within an epoch by
keyed permutations (a Feistel network with cycle walking: O(1) per drawn row, no sort of
the split), a fresh one per epoch, and every policy has a constant number of batches per
epoch, the same on every process (the smallest shard's):

- iid: batch b of the epoch is positions [bN, (b+1)N) of a permutation of the shard, each
  row its own group; the last N-remainder of the shard waits for another epoch.
- natural: the same rows, grouped by shared value (sorted by value, like the host path).
- fixed k / uniform [k_min, k_max]: each group value's members are permuted and cut into
  chunks of k_max (a last chunk shorter than k_min waits for another epoch); the epoch's
  chunks are permuted, and a batch takes M = min(G, 2N // (k_min + k_max)) of them, each
  group the first s ~ U[k_min, k_max] members of its chunk (at most the chunk); groups that
  would overflow N rows are left out of that epoch. For fixed k every batch is
  min(G, N // k) full groups, as on the host path; for uniform a chunk's unused members
  wait for another epoch (the host path packs them instead: its epochs differ in length).

Rows of other splits are not on the devices, so held-out and unseen groups are never drawn.
Layouts differ from the host path's (its epoch plans are numpy draws): a checkpoint saved on
one path resumes on the other only from step 0's data state (the fingerprints differ).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mlvae_jax.data import pipeline, policies
from mlvae_jax.data.errors import DataError

_GOLDEN = 0x9E3779B9
_ROUNDS = 6  # Feistel rounds: enough to pass the policies' statistics, cheap on any device
# Streams of one epoch's key: row order, chunk order, group sizes, members within a value.
_ROWS, _CHUNKS, _SIZES, _MEMBERS = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Plan:
  """What a layout's shape and policy depend on (static in the compiled call).

  `batch` / `groups`: N / G of this process's batch; `num_groups`: the global G (padding
  rows' id); `pieces`: M, chunks a grouped batch takes; `batches_per_epoch`: every process's.
  """

  kind: str
  k_min: int
  k_max: int
  batch: int
  groups: int
  num_groups: int
  pieces: int
  batches_per_epoch: int
  seed: int
  salt: int


def _mix(x: jax.Array) -> jax.Array:
  """A 32-bit integer hash (lowbias32): every output bit depends on every input bit."""
  x = x.astype(jnp.uint32)
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def _key(*words: jax.Array | int) -> jax.Array:
  """One uint32 key from several words (order matters)."""
  key = jnp.uint32(_GOLDEN)
  for word in words:
    word = jnp.uint32(word & 0xFFFFFFFF) if isinstance(word, int) else word.astype(jnp.uint32)
    key = _mix(key ^ _mix(word + jnp.uint32(_GOLDEN)))
  return key


def permute(index: jax.Array, size: jax.Array, key: jax.Array) -> jax.Array:
  """A keyed bijection of [0, size) applied to `index` (< size), elementwise; `size` and
  `key` broadcast against `index`. A balanced Feistel network on the smallest even number of
  bits covering `size`, walking cycles until the value falls inside [0, size)."""
  size = jnp.maximum(jnp.asarray(size), 1).astype(jnp.uint32)
  bits = 32 - jax.lax.clz(size - 1)
  half = (bits + 1) // 2
  mask = (jnp.uint32(1) << half) - 1
  round_keys = [_mix(key ^ jnp.uint32((r + 1) * _GOLDEN & 0xFFFFFFFF)) for r in range(_ROUNDS)]

  def feistel(x):
    left, right = x >> half, x & mask
    for round_key in round_keys:
      left, right = right, left ^ (_mix(right ^ round_key) & mask)
    return (left << half) | right

  shape = jnp.broadcast_shapes(jnp.shape(index), jnp.shape(size), jnp.shape(key))
  size = jnp.broadcast_to(size, shape)
  start = feistel(jnp.broadcast_to(jnp.asarray(index).astype(jnp.uint32), shape))
  walked = jax.lax.while_loop(lambda x: jnp.any(x >= size),
                              lambda x: jnp.where(x >= size, feistel(x), x), start)
  return walked.astype(jnp.int32)


def make_plan(batcher: pipeline.Batcher) -> Plan:
  """The run's static plan; a split whose smallest shard cannot give one batch per epoch is
  a DataError."""
  policy = batcher.policy
  n, g = batcher.local_shape
  pieces = min(g, 2 * n // (policy.k_min + policy.k_max))
  per_process = [_batches_in_epoch(policy, codes, n, pieces) for codes in batcher.shard_codes]
  if min(per_process) == 0:
    raise DataError(
        f"the split cannot give one batch of {n} rows per process on the devices under "
        f"policy {policy.kind!r} (shards of {[len(c) for c in batcher.shard_codes]} rows); "
        "lower data.batch_size, use a larger split or set data.device_resident='off'"
    )
  seed, salt = batcher.entropy
  return Plan(policy.kind, policy.k_min, policy.k_max, n, g, batcher.num_groups, pieces,
              min(per_process), seed, salt)


def _chunks_per_value(policy: policies.Policy, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(members, chunks) of each group value present: chunks of k_max, a tail >= k_min too."""
  _, counts = np.unique(codes, return_counts=True)
  return counts, counts // policy.k_max + (counts % policy.k_max >= policy.k_min)


def _batches_in_epoch(policy: policies.Policy, codes: np.ndarray, batch: int, pieces: int) -> int:
  if policy.kind in ("iid", "natural"):
    return len(codes) // batch
  return int(_chunks_per_value(policy, codes)[1].sum()) // pieces


def tables(batcher: pipeline.Batcher) -> dict[str, np.ndarray]:
  """This process's lookup tables, padded to the largest process's sizes so every process's
  copy has one shape: `codes` of the shard's rows, `members` (shard rows sorted by value),
  each value's `value_start`, `value_count` and first chunk `chunk_start`, and `meta`
  (process index, rows, chunks)."""
  policy, shards = batcher.policy, batcher.shard_codes
  codes = shards[batcher.process_index]
  rows = max(len(c) for c in shards)
  values = max(len(np.unique(c)) for c in shards)
  counts, chunks = _chunks_per_value(policy, codes)
  members = np.argsort(codes, kind="stable")
  chunk_start = np.concatenate([[0], np.cumsum(chunks)])
  return {
      "codes": _padded(codes, rows, 0),
      "members": _padded(members, rows, 0),
      "value_start": _padded(np.concatenate([[0], np.cumsum(counts)[:-1]]), values, 0),
      "value_count": _padded(counts, values, 1),
      "chunk_start": _padded(chunk_start, values + 1, chunk_start[-1]),
      "meta": np.array([batcher.process_index, len(codes), chunk_start[-1]], np.int32),
  }


def _padded(values: np.ndarray, length: int, fill: int) -> np.ndarray:
  out = np.full(length, fill, np.int32)
  out[:len(values)] = values
  return out


def draw(plan: Plan, table: dict[str, jax.Array], step: jax.Array
         ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """This process's layout of `step` (>= 0): rows of its shard (0 on padding), global group
  ids (sorted, G on padding, which comes last) and mask. Runs inside jit."""
  process, rows_in_shard, chunks = table["meta"][0], table["meta"][1], table["meta"][2]
  epoch, index = step // plan.batches_per_epoch, step % plan.batches_per_epoch
  key = _key(plan.seed & 0xFFFFFFFF, plan.seed >> 32, plan.salt, process, epoch)
  offset = process * plan.groups
  if plan.kind in ("iid", "natural"):
    positions = index * plan.batch + jnp.arange(plan.batch)
    rows = permute(positions, rows_in_shard, _key(key, _ROWS))
    slots = jnp.arange(plan.batch)
    if plan.kind == "natural":
      codes = table["codes"][rows]
      order = jnp.argsort(codes, stable=True)
      rows, codes = rows[order], codes[order]
      slots = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(codes[1:] != codes[:-1])])
    return rows, (slots + offset).astype(jnp.int32), jnp.ones(plan.batch, bool)
  return _draw_groups(plan, table, key, index, chunks, offset)


def _draw_groups(plan: Plan, table: dict[str, jax.Array], key: jax.Array, index: jax.Array,
                 chunks: jax.Array, offset: jax.Array) -> tuple[jax.Array, ...]:
  """fixed / uniform: M chunks of the epoch's permuted chunk order, laid out one group after
  another; a row belongs to the group whose extent covers it."""
  pieces = index * plan.pieces + jnp.arange(plan.pieces)
  chunk = permute(pieces, chunks, _key(key, _CHUNKS))
  value = jnp.searchsorted(table["chunk_start"], chunk, side="right") - 1
  first = (chunk - table["chunk_start"][value]) * plan.k_max
  count = table["value_count"][value]
  drawn = plan.k_min + (_mix(_key(key, _SIZES) ^ pieces.astype(jnp.uint32))
                        % jnp.uint32(plan.k_max - plan.k_min + 1)).astype(jnp.int32)
  sizes = jnp.minimum(drawn, count - first)
  ends = jnp.cumsum(sizes)
  row = jnp.arange(plan.batch)
  group = jnp.minimum(jnp.searchsorted(ends, row, side="right"), plan.pieces - 1)
  mask = (row < ends[-1]) & (ends[group] <= plan.batch)
  member = first[group] + row - (ends[group] - sizes[group])
  within = permute(jnp.where(mask, member, 0), count[group],
                   _key(key, _MEMBERS) ^ _mix(value[group].astype(jnp.uint32)))
  rows = table["members"][table["value_start"][value[group]] + within]
  group_ids = jnp.where(mask, group + offset, plan.num_groups)
  return jnp.where(mask, rows, 0), group_ids.astype(jnp.int32), mask
