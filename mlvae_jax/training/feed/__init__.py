"""Feeding the training calls: everything between the data pipeline and a jitted call.

`make_feed` decides per config.data.device_resident whether the train split stays on the
devices (resident.py: a call then receives only which of its slots are steps, draws each
step's layout there from the state's step (layouts.py) and gathers its images) or batches
come from the host pipeline (host.py). Either way `calls` yields the inputs of one call of up to K steps at a time
(stacking.py), already on the devices: a background thread assembles and copies them while
the devices run the previous call (prefetch.py). Each comes with the data state right after
its steps, what a checkpoint at the call's end stores. `mlvae_jax.data` knows no devices;
this package is where its batches meet them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mlvae_jax import data as data_lib
from mlvae_jax.data import pipeline
from mlvae_jax.data.errors import DataError
from mlvae_jax.groups import validate_batch
from mlvae_jax.training import device_memory, step_calls
from mlvae_jax.training.feed import host, layouts, resident, stacking
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

  `iterator`: its data state (get_state/set_state); `take(length)`: the next `length`
  steps' inputs of one call (K slots), on the devices; `to_batch(one slot's inputs, data,
  step)`: the step's batch, inside the call; `data`: the resident split (None on the host
  path); `input_specs`: a call's inputs, for compiling it.
  """

  iterator: Any
  take: Callable[[int], dict[str, jax.Array]]
  to_batch: step_calls.ToBatch
  data: dict[str, jax.Array] | None
  input_specs: dict[str, jax.ShapeDtypeStruct]

  @property
  def input_sharding(self) -> Any:
    return next(iter(self.input_specs.values())).sharding

  @property
  def data_sharding(self) -> Any:
    return None if self.data is None else jax.tree.map(lambda a: a.sharding, self.data)

  @property
  def resident_bytes(self) -> int:
    """Bytes of the resident split and its tables on each device."""
    if self.data is None:
      return 0
    return sum(a.addressable_shards[0].data.nbytes for a in jax.tree.leaves(self.data))


def make_feed(setup: Setup) -> Feed:
  """The train split's feed, a resident split placed; a split that cannot give the
  configured batches is a SetupError (one line)."""
  try:
    return _make_feed(setup)
  except ValueError as e:  # DataError: the split cannot give the configured batches
    raise SetupError(str(e).strip().splitlines()[0]) from e


def _make_feed(setup: Setup) -> Feed:
  config, mesh, k = setup.config, setup.mesh, setup.config.train.steps_per_call
  batcher = data_lib.make_batcher(config.data, "train", seed=config.seed,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  local = mesh.local_devices
  keep = resident.keep_resident(
      config.data.device_resident, batcher.shard_nbytes,
      device_memory.free_bytes(local[0], len(local)))
  if keep:
    return _resident_feed(setup, batcher)
  iterator = host.make_iterator(config, "train")
  buffers = stacking.SlotBuffers()

  def take(length: int) -> dict[str, jax.Array]:
    batches = [next(iterator) for _ in range(length)]
    if config.train.debug_checks:
      for batch in batches:
        validate_batch(batch, config.data.num_groups)
    return stacking.to_devices(stacking.stack(batches, k, host.STEP_KEYS, buffers),
                               stacking.input_sharding(mesh, k))

  sample = batcher(0)
  lead = () if k == 1 else (k,)
  specs = {key: jax.ShapeDtypeStruct(
      (*lead, sample[key].shape[0] * jax.process_count(), *sample[key].shape[1:]),
      sample[key].dtype, sharding=stacking.input_sharding(mesh, k)) for key in host.STEP_KEYS}
  return Feed(iterator, take, step_calls.host_batch, None, specs)


def _resident_feed(setup: Setup, batcher: data_lib.pipeline.Batcher) -> Feed:
  """The split on the devices; a call's input is which of its K slots are steps."""
  config, mesh, k = setup.config, setup.mesh, setup.config.train.steps_per_call
  plan = layouts.make_plan(batcher)
  data_step = resident.DataStep(
      resident.fingerprint(pipeline.fingerprint(config.data, "train", config.seed, None)))
  replicated = NamedSharding(mesh, PartitionSpec())
  actives = {length: stacking.to_devices(
      {resident.ACTIVE_KEY: np.arange(k) < length if k > 1 else np.bool_(True)}, replicated)
      for length in range(1, k + 1)}  # made once: a call copies nothing to the devices

  def take(length: int) -> dict[str, jax.Array]:
    data_step.step += length
    return actives[length]

  to_batch = functools.partial(resident.step_batch, plan=plan,
                               pixel_scale=batcher.pixel_scale, mesh=mesh)
  spec = jax.ShapeDtypeStruct((k,) if k > 1 else (), np.bool_, sharding=replicated)
  return Feed(data_step, take, to_batch, resident.put_split(batcher, mesh),
              {resident.ACTIVE_KEY: spec})


def calls(feed: Feed, setup: Setup, start: int, stop: int,
          call_length: Callable[[int], int]) -> Prefetcher[Call]:
  """The calls from step `start` to `stop`, `call_length(step)` steps each, prefetched one
  call ahead (close the result, or use it as a context manager)."""

  if feed.data is not None and feed.iterator.get_state()["step"] != start:
    raise DataError(
        f"the resident split's data step {feed.iterator.get_state()['step']} is not the "
        f"train state's step {start}: a call draws its layouts from the state's step; "
        "restore both from one checkpoint")

  def produce() -> Iterator[Call]:
    step = start
    while step < stop:
      length = min(call_length(step), stop - step)
      inputs = feed.take(length)
      step += length
      yield Call(inputs, length, feed.iterator.get_state())

  return Prefetcher(produce())
