"""Grouped batches as a grain pipeline: a pure function of (seed, step), resumable by step.

`Batcher` maps a global step to this process's batch: the step gives (epoch, index in
epoch), the epoch gives a plan (`policies.plan_epoch` with an rng seeded by seed, split,
epoch and process), the plan gives the rows. grain runs it (threads, or worker processes with
`data.num_workers`), and the iterator's whole state is the next step, so a checkpoint can
store it as JSON and resume mid-epoch on any number of workers.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import sys
import threading
from typing import Any, Iterator

from absl import flags
import grain
import numpy as np

from mlvae_jax.data import policies
from mlvae_jax.data.errors import DataError
from mlvae_jax.groups import validate_batch

_SPLIT_SALT = {"train": 0, "validation": 1, "test": 2, "unseen": 3}
_PLANS_KEPT = 2


class Batcher:
  """step -> host-local batch dict; picklable (grain workers reopen the image memmap)."""

  def __init__(self, *, images: np.ndarray, pixel_scale: float, shards: list[np.ndarray],
               codes: np.ndarray, factors: np.ndarray | None, policy: policies.Policy,
               split: str, seed: int, batch_size: int, num_groups: int, process_index: int,
               finite: bool):
    self._images = images
    self._images_path = getattr(images, "filename", None)
    self._scale = np.float32(1.0 / pixel_scale)
    self._rows = shards[process_index]  # example indices this process reads
    self._shard_codes = [codes[s] for s in shards]  # every shard's codes: to count batches
    self._codes = codes[self._rows]
    self._factors = None if factors is None else factors[self._rows]
    self._policy = policy
    self._entropy = [seed % (1 << 64), _SPLIT_SALT[split]]
    self._process_index = process_index
    self._local_n = batch_size // len(shards)
    self._local_g = num_groups // len(shards)
    self._num_groups = num_groups
    self._finite = finite
    self._ends: list[int] = []  # cumulative batches at the end of each epoch (all processes)
    self._plans: dict[int, policies.Plan] = {}
    self._lock = threading.Lock()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__, _lock=None, _plans={})
    if self._images_path is not None:
      state["_images"] = None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()
    if self._images is None:
      self._images = np.load(self._images_path, mmap_mode="r")

  @property
  def observation_shape(self) -> tuple[int, ...]:
    return tuple(self._images.shape[1:])

  def _plan(self, epoch: int, process: int) -> policies.Plan:
    rng = np.random.default_rng(self._entropy + [epoch, process])
    return policies.plan_epoch(self._policy, self._shard_codes[process], rng, self._local_n,
                               self._local_g, drop_remainder=not self._finite)

  def _own_plan(self, epoch: int) -> policies.Plan:
    with self._lock:
      if epoch not in self._plans:
        if len(self._plans) >= _PLANS_KEPT:
          self._plans.pop(min(self._plans))
        self._plans[epoch] = self._plan(epoch, self._process_index)
      return self._plans[epoch]

  def batches_in_epoch(self, epoch: int) -> int:
    """The same for every process: the fewest of any process when training forever (extra
    batches dropped), the most when finite (missing ones all padding, so eval sees all)."""
    with self._lock:
      while len(self._ends) <= epoch:
        e = len(self._ends)
        if self._policy.constant_count and e:
          count = self._ends[0]
        else:
          counts = [len(self._plan(e, p)) for p in range(len(self._shard_codes))]
          count = max(counts) if self._finite else min(counts)
        self._ends.append((self._ends[-1] if e else 0) + count)
      return self._ends[epoch] - (self._ends[epoch - 1] if epoch else 0)

  def locate(self, step: int) -> tuple[int, int]:
    """(epoch, batch index in epoch) of a global step."""
    if self._policy.constant_count:
      return divmod(step, self.batches_in_epoch(0))
    while not self._ends or self._ends[-1] <= step:
      self.batches_in_epoch(len(self._ends))
    epoch = bisect.bisect_right(self._ends, step)
    return epoch, step - (self._ends[epoch - 1] if epoch else 0)

  @property
  def policy(self) -> policies.Policy:
    return self._policy

  @property
  def process_index(self) -> int:
    return self._process_index

  @property
  def shard_codes(self) -> list[np.ndarray]:
    """Every process's group codes, in the order of its shard (`shard_images`' rows)."""
    return list(self._shard_codes)

  @property
  def local_shape(self) -> tuple[int, int]:
    """(rows, group slots) of this process's batch: N / P and G / P."""
    return self._local_n, self._local_g

  @property
  def num_groups(self) -> int:
    """G of the global batch: the group id of padding rows."""
    return self._num_groups

  @property
  def entropy(self) -> tuple[int, int]:
    """(seed, split salt): what every draw of this split is seeded with."""
    return self._entropy[0], self._entropy[1]

  @property
  def pixel_scale(self) -> np.float32:
    """What a stored pixel is multiplied by to lie in [0, 1]."""
    return self._scale

  @property
  def _largest_shard(self) -> int:
    return max(len(codes) for codes in self._shard_codes)

  @property
  def shard_nbytes(self) -> int:
    """Bytes of `shard_images()`, known without reading them."""
    return self._largest_shard * int(np.prod(self.observation_shape)) * self._images.dtype.itemsize

  def shard_images(self) -> np.ndarray:
    """This process's examples in their stored dtype, indexed by `layout`'s `rows`; zeros
    after them up to the largest process's shard, so every process's copy has one shape."""
    images = np.zeros((self._largest_shard, *self.observation_shape), self._images.dtype)
    images[:len(self._rows)] = self._images[self._rows]
    return images

  def layout(self, step: int) -> dict[str, np.ndarray]:
    """The batch of `step` without its pixels: `rows` (int32 positions in `shard_images`,
    0 on padding rows), group_ids, mask, labels[, factors]; checked against the contract."""
    epoch, index = self.locate(int(step))
    plan = self._own_plan(epoch)
    lo, hi = (plan.offsets[index], plan.offsets[index + 1]) if index < len(plan) else (0, 0)
    local = plan.rows[lo:hi]
    n, size = hi - lo, self._local_n
    rows = np.zeros(size, np.int32)
    rows[:n] = local
    group_ids = np.full(size, self._num_groups, np.int32)
    group_ids[:n] = plan.slots[lo:hi] + self._process_index * self._local_g
    labels = np.full(size, -1, np.int32)
    labels[:n] = self._codes[local]
    batch = dict(rows=rows, group_ids=group_ids, mask=np.arange(size) < n, labels=labels)
    if self._factors is not None:
      factors = np.full((size, self._factors.shape[1]), -1, np.int32)
      factors[:n] = self._factors[local]
      batch["factors"] = factors
    validate_batch(dict(batch, x=rows), self._num_groups)
    return batch

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    batch = self.layout(step)
    rows, n = batch.pop("rows"), int(batch["mask"].sum())
    # One pass over the rows (gather, convert and scale together) and zeros only in the
    # padding: at batch 4096 every extra pass over x costs the host milliseconds.
    x = np.empty((len(rows),) + self.observation_shape, np.float32)
    np.multiply(self._images[self._rows[rows[:n]]], self._scale, out=x[:n], casting="unsafe")
    x[n:] = 0
    return dict(x=x, **batch)

  def num_steps(self, num_epochs: int | None) -> int:
    if num_epochs is None:
      if self.batches_in_epoch(0) == 0:
        raise DataError(
            f"the split has fewer examples per process ({len(self._rows)}) than one full "
            f"batch of {self._local_n} needs under policy {self._policy.kind!r}; lower "
            "data.batch_size or use a larger split"
        )
      return sys.maxsize
    return sum(self.batches_in_epoch(e) for e in range(num_epochs))


class BatchIterator(Iterator[dict]):
  """Host-local batches; `get_state()` / `set_state()` resume exactly (JSON-serialisable)."""

  def __init__(self, batcher: Batcher, *, num_epochs: int | None, num_workers: int,
               fingerprint: str):
    self.observation_shape = batcher.observation_shape
    self._fingerprint = fingerprint
    self._dataset = grain.MapDataset.range(batcher.num_steps(num_epochs)).map(batcher)
    self._num_workers = num_workers
    self._restart(0)

  def _restart(self, step: int) -> None:
    dataset = self._dataset[step:].to_iter_dataset(
        grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
    if self._num_workers > 0:
      if not flags.FLAGS.is_parsed():  # grain reads absl flags; scripts without absl.app
        flags.FLAGS.mark_as_parsed()  # never parse them, and defaults are what we want
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._num_workers))
    self._step = step
    self._iterator = iter(dataset)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator)
    self._step += 1
    return batch

  def __iter__(self) -> "BatchIterator":
    return self

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "fingerprint": self._fingerprint}

  def set_state(self, state: dict[str, Any]) -> None:
    self._restart(resume_step(state, self._fingerprint))


def resume_step(state: dict[str, Any], expected_fingerprint: str) -> int:
  """The next step of a saved iterator state; a state of another data config is a DataError."""
  if state.get("fingerprint") != expected_fingerprint:
    raise DataError(
        "this iterator state was saved by a loader with a different data config, split or "
        f"seed (fingerprint {state.get('fingerprint')!r}, expected {expected_fingerprint!r}); "
        "restore it with the config it was saved with"
    )
  return int(state["step"])


_NOT_IN_FINGERPRINT = ("data_dir", "manual_dir", "num_workers", "device_resident")


def fingerprint(data_config: Any, split: str, seed: int, num_epochs: int | None) -> str:
  """What the batch sequence depends on; not where files live, nor the process layout
  (steps are global), so a run can resume on another machine or number of hosts."""
  config = {k: v for k, v in dict(data_config).items() if k not in _NOT_IN_FINGERPRINT}
  content = json.dumps([config, split, seed, num_epochs], sort_keys=True, default=str)
  return hashlib.sha256(content.encode()).hexdigest()[:16]
