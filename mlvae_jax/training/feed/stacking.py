"""A call's host inputs: K steps' arrays stacked along a leading slot axis and sent to the
devices in one transfer, split over the mesh's 'data' axis (see training/step_calls.py)."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mlvae_jax.training import sharding


def stack(batches: Sequence[Mapping[str, np.ndarray]], steps_per_call: int,
          keys: Sequence[str]) -> dict[str, np.ndarray]:
  """One call's host inputs: `keys` of the batches; for K > 1 stacked into K slots, those
  after the batches all padding (zeros, mask False)."""
  if steps_per_call == 1:
    (batch,) = batches
    return {key: batch[key] for key in keys}
  stacked = {}
  for key in keys:
    first = np.asarray(batches[0][key])
    slots = np.empty((steps_per_call, *first.shape), first.dtype)
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
