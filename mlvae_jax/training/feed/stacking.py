"""A call's host inputs: K steps' arrays stacked along a leading slot axis and sent to the
devices in one transfer, split over the mesh's 'data' axis (see training/step_calls.py)."""

from __future__ import annotations

import sys
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mlvae_jax.training import sharding


# sys.getrefcount of a pooled buffer no array holds: the pool's list, the loop's name and
# getrefcount's own argument; and of the memory it views (an array made from the buffer holds
# that owner, not the view): the view's base and the argument.
_UNHELD_REFS = 3
_UNHELD_OWNER_REFS = 2
# XLA:CPU makes an array of a host buffer without copying it only when the buffer is aligned
# to this many bytes; numpy's large buffers are 16-byte aligned, so they were copied (8 ms a
# step at batch 4096, K=32).
_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
  """An uninitialised array whose data starts on a _ALIGNMENT-byte boundary."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape)) * dtype.itemsize
  raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
  offset = -raw.ctypes.data % _ALIGNMENT
  return raw[offset:offset + nbytes].view(dtype).reshape(shape)


class SlotBuffers:
  """Host buffers for a call's stacked inputs, refilled once no array holds them.

  Why: a fresh [K, N, ...] buffer per call is new memory each time (411 MiB at batch 4096,
  K=32), and first touching its pages costs the host more than copying the batches into it.
  A buffer cannot simply be reused either: on CPU the devices' arrays alias the (aligned)
  host buffer they were made from, without a copy, and hold its memory while they live; on
  an accelerator until the transfer is done. So a buffer is handed out again only when the
  reference counts of it and its memory say no array holds it; otherwise a new one is made
  (at most `keep` per key are kept: the calls in flight and prefetched).
  """

  def __init__(self, keep: int = 4):
    self._keep = keep
    self._buffers: dict[str, list[np.ndarray]] = {}

  def get(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised buffer of `shape` and `dtype` for `key` that nothing else holds."""
    pooled = self._buffers.setdefault(key, [])
    for buffer in pooled:
      if (buffer.shape == shape and buffer.dtype == dtype
          and sys.getrefcount(buffer) <= _UNHELD_REFS
          and sys.getrefcount(buffer.base) <= _UNHELD_OWNER_REFS):
        return buffer
    buffer = aligned_empty(shape, dtype)
    if len(pooled) < self._keep:
      pooled.append(buffer)
    return buffer


def stack(batches: Sequence[Mapping[str, np.ndarray]], steps_per_call: int,
          keys: Sequence[str], buffers: SlotBuffers | None = None) -> dict[str, np.ndarray]:
  """One call's host inputs: `keys` of the batches; for K > 1 stacked into K slots (of a
  buffer from `buffers` when given), those after the batches all padding (zeros, mask
  False)."""
  if steps_per_call == 1:
    (batch,) = batches
    return {key: batch[key] for key in keys}
  stacked = {}
  for key in keys:
    first = np.asarray(batches[0][key])
    shape = (steps_per_call, *first.shape)
    slots = (np.empty(shape, first.dtype) if buffers is None
             else buffers.get(key, shape, first.dtype))
    for slot, batch in zip(slots, batches):
      slot[...] = batch[key]  # in place: a list of the batches first would copy them twice
    slots[len(batches):] = 0
    stacked[key] = slots
  return stacked


def input_sharding(mesh: Mesh, steps_per_call: int) -> NamedSharding:
  """Observations split over 'data'; the slot axis of K > 1 whole on every device."""
  if steps_per_call == 1:
    return sharding.batch_sharding(mesh)
  return NamedSharding(mesh, PartitionSpec(None, sharding.DATA_AXIS))


def to_devices(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  """This process's part of a call's inputs -> the global inputs (one transfer call)."""
  return jax.make_array_from_process_local_data(
      sharding, {key: np.asarray(v) for key, v in local.items()})
