"""Feeding the training calls: everything between the data pipeline and a jitted call.

`make_feed` decides per config.data.device_resident whether the train split stays on the
devices (resident.py: a call then receives only rows, group ids and mask, and gathers its
images there) or batches come from the host pipeline (host.py). Either way `calls` yields
the inputs of one call of up to K steps at a time (stacking.py), already on the devices: a
background thread assembles and copies them while the devices run the previous call
(prefetch.py). Each comes with the iterator state right after its batches, what a
checkpoint at the call's end stores. `mlvae_jax.data` knows no devices; this package is
where its batches meet them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import jax
import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax.data import pipeline
from mlvae_jax.groups import validate_batch
from mlvae_jax.training import device_memory, step_calls
from mlvae_jax.training.feed import host, resident, stacking
from mlvae_jax.training.feed.prefetch import Prefetcher
from mlvae_jax.training.workdir import SetupError

if TYPE_CHECKING:
  from mlvae_jax.training.setup import Setup


@dataclasses.dataclass(frozen=True)
class Call:
  """One call's inputs on the devices, its number of steps, and the data state after it."""

  inputs: dict[str, jax.Array]
  steps: int
  data_state: Any


@dataclasses.dataclass(frozen=True)
class Feed:
  """Where a run's train batches come from.

  `iterator`: host batches or layouts, with get_state/set_state; `keys`: what a call reads
  of each; `to_batch(one step's inputs, data)`: the step's batch; `data`: the resident
  images (None on the host path); `input_specs`: a call's inputs, for compiling it.
  """

  iterator: Any
  keys: tuple[str, ...]
  to_batch: step_calls.ToBatch
  data: jax.Array | None
  input_specs: dict[str, jax.ShapeDtypeStruct]

  @property
  def resident_bytes(self) -> int:
    """Bytes of the resident images on each device."""
    if self.data is None:
      return 0
    return self.data.addressable_shards[0].data.nbytes


def make_feed(run: Setup) -> Feed:
  """The train split's feed, resident images placed; a split that cannot give the
  configured batches is a SetupError (one line)."""
  try:
    return _make_feed(run)
  except ValueError as e:  # DataError: the split cannot give the configured batches
    raise SetupError(str(e).strip().splitlines()[0]) from e


def _make_feed(run: Setup) -> Feed:
  config, mesh, k = run.config, run.mesh, run.config.train.steps_per_call
  batcher = data_lib.make_batcher(config.data, "train", seed=config.seed,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  local = mesh.local_devices
  keep = resident.keep_resident(
      config.data.device_resident, batcher.shard_nbytes,
      device_memory.free_bytes(local[0], len(local)))
  if not keep:
    return Feed(host.make_iterator(config, "train"), host.STEP_KEYS, step_calls.host_batch,
                None, _input_specs(batcher(0), host.STEP_KEYS, mesh, k))
  layouts = resident.LayoutIterator(
      batcher, pipeline.fingerprint(config.data, "train", config.seed, None))
  to_batch = functools.partial(resident.gather_batch, pixel_scale=batcher.pixel_scale,
                               mesh=mesh)
  return Feed(layouts, resident.LAYOUT_KEYS, to_batch, resident.put_images(batcher, mesh),
              _input_specs(batcher.layout(0), resident.LAYOUT_KEYS, mesh, k))


def _input_specs(sample: Mapping[str, np.ndarray], keys: tuple[str, ...], mesh: Any,
                 steps_per_call: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes of a call's inputs from one host batch (every process's rows)."""
  lead = () if steps_per_call == 1 else (steps_per_call,)
  sharding = stacking.input_sharding(mesh, steps_per_call)
  return {key: jax.ShapeDtypeStruct(
      (*lead, sample[key].shape[0] * jax.process_count(), *sample[key].shape[1:]),
      sample[key].dtype, sharding=sharding) for key in keys}


def calls(feed: Feed, run: Setup, start: int, stop: int,
          call_length: Callable[[int], int]) -> Prefetcher[Call]:
  """The calls from step `start` to `stop`, `call_length(step)` steps each, prefetched one
  call ahead (close the result, or use it as a context manager)."""
  config = run.config
  k = config.train.steps_per_call

  def produce() -> Iterator[Call]:
    step = start
    while step < stop:
      length = min(call_length(step), stop - step)
      batches = [next(feed.iterator) for _ in range(length)]
      if config.train.debug_checks:
        for batch in batches:
          validate_batch(batch if "x" in batch else dict(batch, x=batch["rows"]),
                         config.data.num_groups)
      inputs = stacking.to_devices(stacking.stack(batches, k, feed.keys), run.mesh, k)
      step += length
      yield Call(inputs, length, feed.iterator.get_state())

  return Prefetcher(produce())
