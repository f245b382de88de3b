"""The train split kept on the devices (config.data.device_resident), and its batches.

A small model's loop is bound by the host: assembling N images, copying them over the host
link and dispatching the step cost more than the step. When the split fits in device memory
it is copied there once with its lookup tables, and each step draws its layout there from
(seed, step) (layouts.py) and gathers its images with `jnp.take`: a call receives only its
step numbers. x is the host's product of stored pixel and scale, bit for bit.

Each process keeps its own shard of the split, one copy per local device: device d holds
block d of a [D * S, ...] array (S: the largest shard), and a `shard_map` draws each
process's layout on its devices and gathers each device's rows from its own block, so no
image crosses between devices.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from mlvae_jax.data import pipeline
from mlvae_jax.data.errors import DataError
from mlvae_jax.training import sharding
from mlvae_jax.training.feed import layouts

MODES = ("auto", "on", "off")
ACTIVE_KEY = "active"  # a call's input: whether each slot is a step
# 'auto' keeps a split resident when one copy takes at most this share of a device's free
# memory: the rest is for the parameters, optimiser state and activations.
AUTO_SHARE = 0.5
_POSITION = "position"  # each device's rank among its process's devices, in mesh order


def keep_resident(mode: str, needed: int, available: int) -> bool:
  """Whether to keep the split on the devices under config.data.device_resident=`mode`;
  'on' for a split that cannot fit is a DataError saying how much it needs."""
  if mode not in MODES:
    raise DataError(f"config.data.device_resident={mode!r} is unknown; use one of {MODES}")
  if mode == "off":
    return False
  if mode == "auto":
    return needed <= AUTO_SHARE * available
  if needed > available:
    raise DataError(
        f"config.data.device_resident='on' needs {needed / 2**30:.2f} GiB per device for the "
        f"train split but {available / 2**30:.2f} GiB are free; use 'auto' or 'off'"
    )
  return True


def put_split(batcher: pipeline.Batcher, mesh: Mesh) -> dict[str, jax.Array]:
  """This process's shard and its layout tables on each of its devices: block d of every
  array is device d's copy."""
  local = {"images": batcher.shard_images(), **layouts.tables(batcher)}
  blocks = mesh.devices.flatten()
  mine = [d for d, device in enumerate(blocks) if device.process_index == jax.process_index()]

  def put(value: np.ndarray) -> jax.Array:
    shape = (len(blocks) * value.shape[0], *value.shape[1:])
    return jax.make_array_from_callback(shape, sharding.batch_sharding(mesh), lambda _: value)

  placed = {key: put(value) for key, value in local.items()}
  positions = np.zeros(len(blocks), np.int32)
  positions[mine] = np.arange(len(mine))
  placed[_POSITION] = jax.make_array_from_callback(
      positions.shape, sharding.batch_sharding(mesh), lambda index: positions[index])
  return placed


def step_batch(inputs: dict[str, jax.Array], split: dict[str, jax.Array], step: jax.Array, *,
               plan: layouts.Plan, pixel_scale: np.float32, mesh: Mesh) -> dict[str, jax.Array]:
  """The batch (x, group_ids, mask) of data step `step` (the train state's: they advance
  together), drawn and gathered on each device from its own block of `split`; a slot not
  `inputs[ACTIVE_KEY]` is a batch without a valid row. Padding rows are zeros, as on the
  host path. Call it inside jit (partially applied, it is a `step_calls.ToBatch`)."""
  rows_per_device = plan.batch * jax.process_count() // mesh.devices.size

  def gather(block: dict[str, jax.Array], step: jax.Array, active: jax.Array):
    rows, group_ids, mask = layouts.draw(plan, block, step)
    start = block[_POSITION][0] * rows_per_device
    take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, rows_per_device)  # noqa: E731
    rows, group_ids, mask = take(rows), take(group_ids), take(mask) & active
    x = jnp.take(block["images"], rows, axis=0, mode="clip").astype(jnp.float32) * pixel_scale
    x = jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, 0.0)
    return x, jnp.where(mask, group_ids, plan.num_groups), mask

  spec = PartitionSpec(sharding.DATA_AXIS)
  x, group_ids, mask = jax.shard_map(
      gather, mesh=mesh, in_specs=(spec, PartitionSpec(), PartitionSpec()), out_specs=spec)(
          split, step, inputs[ACTIVE_KEY])
  return {"x": x, "group_ids": group_ids, "mask": mask}


def fingerprint(host_fingerprint: str) -> str:
  """The data state's fingerprint on the devices: its batches are not the host path's."""
  return f"{host_fingerprint}:device"


class DataStep:
  """The data state of a resident split: its next step (JSON, like the host iterator's),
  which is the train state's step (a call draws its layouts from that)."""

  def __init__(self, fingerprint: str):
    self._fingerprint = fingerprint
    self.step = 0

  def get_state(self) -> dict[str, Any]:
    return {"step": self.step, "fingerprint": self._fingerprint}

  def set_state(self, state: dict[str, Any]) -> None:
    self.step = pipeline.resume_step(state, self._fingerprint)
