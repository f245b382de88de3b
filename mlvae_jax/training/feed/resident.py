"""Training batches gathered on the devices from a split kept there (config.data.device_resident).

A small model's loop is bound by the host: assembling N images, copying them over the host
link and dispatching the step cost more than the step. When the split fits in device memory
it is copied there once, and each step receives only its layout (rows, group ids and mask:
9 bytes a row), from which the step gathers its images with `jnp.take`. Layouts come from the
host path's `Batcher`, so batches, their order and the resumable iterator state are the host
path's, and x is the host's bit for bit (the same float32 product of stored pixel and scale).

Each process keeps its own shard of the split, one copy per local device: device d holds
block d of a [D * S, ...] array (S: the largest shard), and a `shard_map` gathers each
device's rows of the batch from its own block, so no image crosses between devices.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from mlvae_jax.data import pipeline
from mlvae_jax.data.errors import DataError
from mlvae_jax.training import sharding

MODES = ("auto", "on", "off")
LAYOUT_KEYS = ("rows", "group_ids", "mask")  # what a step reads of a layout
# 'auto' keeps a split resident when one copy takes at most this share of a device's free
# memory: the rest is for the parameters, optimiser state and activations.
AUTO_SHARE = 0.5


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


def put_images(batcher: pipeline.Batcher, mesh: Mesh) -> jax.Array:
  """This process's shard on each of its devices: block d of the result is device d's copy."""
  local = batcher.shard_images()
  shape = (mesh.devices.size * local.shape[0], *local.shape[1:])
  return jax.make_array_from_callback(shape, sharding.batch_sharding(mesh), lambda _: local)


def gather_batch(
    layout: Mapping[str, jax.Array], images: jax.Array, *, pixel_scale: np.float32, mesh: Mesh
) -> dict[str, jax.Array]:
  """The batch (x, group_ids, mask) of a layout, its x gathered on each device from its own
  block of `images`; padding rows are zeros, as on the host path. Call it inside jit
  (partially applied, it is a `step_calls.ToBatch`)."""

  def gather(block: jax.Array, rows: jax.Array, mask: jax.Array) -> jax.Array:
    x = jnp.take(block, rows, axis=0, mode="clip").astype(jnp.float32) * pixel_scale
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, 0.0)

  spec = PartitionSpec(sharding.DATA_AXIS)
  x = jax.shard_map(gather, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(
      images, layout["rows"], layout["mask"])
  return {"x": x, "group_ids": layout["group_ids"], "mask": layout["mask"]}


class LayoutIterator(Iterator[dict]):
  """The host path's batches without pixels; its state is BatchIterator's (JSON, by step),
  so a run saved on either path resumes on the other."""

  def __init__(self, batcher: pipeline.Batcher, fingerprint: str):
    batcher.num_steps(None)  # a split without one full batch is a DataError, as on the host
    self.batcher = batcher
    self._fingerprint = fingerprint
    self._step = 0

  def __next__(self) -> dict[str, np.ndarray]:
    layout = self.batcher.layout(self._step)
    self._step += 1
    return layout

  def __iter__(self) -> LayoutIterator:
    return self

  def get_state(self) -> dict[str, Any]:
    return {"step": self._step, "fingerprint": self._fingerprint}

  def set_state(self, state: dict[str, Any]) -> None:
    self._step = pipeline.resume_step(state, self._fingerprint)
