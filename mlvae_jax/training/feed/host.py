"""Host batches: this process's batches of a split from the data pipeline, and their way to
the devices as one global batch sharded along observations (train and evaluation alike)."""

from __future__ import annotations

from typing import Mapping

import jax
import ml_collections
import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax.groups import validate_batch
from mlvae_jax.training import sharding
from mlvae_jax.training.workdir import SetupError

STEP_KEYS = ("x", "group_ids", "mask")  # what the loss reads; labels/factors stay on host


def make_iterator(
    config: ml_collections.ConfigDict, split: str, num_epochs: int | None = None
) -> data_lib.BatchIterator:
  """This process's batches of `split`; a split that cannot give them is a SetupError."""
  try:
    return data_lib.make_batch_iterator(
        config.data, split, seed=config.seed, num_epochs=num_epochs,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
  except ValueError as e:  # DataError: the split cannot give the configured batches
    raise SetupError(str(e).strip().splitlines()[0]) from e


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh
                 ) -> dict[str, jax.Array]:
  """Assembles the host-local rows of every process into one batch sharded along 'data'."""
  # One call for the whole dict: per-array calls cost a host round trip each, and small
  # models' training loops are bound by exactly this host work.
  local = {key: np.asarray(value) for key, value in local_batch.items()}
  return jax.make_array_from_process_local_data(sharding.batch_sharding(mesh), local)


def device_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                 host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """This process's rows of a batch -> the global batch of what the loss reads (checked
  against the batch contract first under config.train.debug_checks)."""
  if config.train.debug_checks:
    validate_batch(host_batch, config.data.num_groups)
  return global_batch({k: host_batch[k] for k in STEP_KEYS}, mesh)
