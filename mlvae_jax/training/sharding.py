"""Device mesh, shardings and multi-host helpers.

Training is data parallel: one mesh axis, 'data', spans the devices of all hosts; the batch
is split along observations and parameters are replicated. Groups may straddle devices:
the segment sums in the objective then become cross-device reductions that XLA inserts
(Auto axes), so results do not depend on how the batch is split.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from mlvae_jax.training.workdir import SetupError

DATA_AXIS = "data"
_ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
_ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto_detect: bool = False,
) -> bool:
  """Joins a multi-process run; returns False when this is a single-process run.

  Missing arguments come from JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID;
  with `auto_detect`, JAX finds them itself on the clusters it knows (SLURM, Cloud TPU, MPI).
  Must run before any other JAX call.
  """
  coordinator_address = coordinator_address or os.environ.get(_ENV_COORDINATOR)
  if num_processes is None and _ENV_NUM_PROCESSES in os.environ:
    num_processes = int(os.environ[_ENV_NUM_PROCESSES])
  if process_id is None and _ENV_PROCESS_ID in os.environ:
    process_id = int(os.environ[_ENV_PROCESS_ID])
  if not (auto_detect or coordinator_address or num_processes is not None):
    return False
  jax.distributed.initialize(
      coordinator_address, num_processes, process_id, initialization_timeout=120
  )
  return True


def make_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
  """The 1-D 'data' mesh of config.mesh: `data` devices (-1: all devices of all hosts)."""
  total = jax.device_count()
  size = total if mesh_config.data == -1 else mesh_config.data
  if not 1 <= size <= total:
    raise SetupError(
        f"config.mesh.data={mesh_config.data} but {total} devices are visible; "
        f"use -1 (all) or a value in [1, {total}]"
    )
  if jax.process_count() > 1 and size != total:
    raise SetupError(
        f"config.mesh.data={mesh_config.data} but a multi-process run must use all {total} "
        "devices; use --config.mesh.data=-1"
    )
  return jax.make_mesh(
      (size,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:size]
  )


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (observation) axis split over 'data'; other axes whole."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, optimiser state, metrics)."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Fails unless the global batch splits evenly over devices and processes."""
  devices = mesh.devices.size
  if batch_size % devices:
    lower = max(devices, batch_size // devices * devices)
    raise SetupError(
        f"config.data.batch_size={batch_size} is not divisible by the {devices} devices of "
        f"config.mesh; use a multiple of {devices} such as {lower}, or set config.mesh.data"
    )
  if batch_size % jax.process_count():
    raise SetupError(
        f"config.data.batch_size={batch_size} is not divisible by the "
        f"{jax.process_count()} processes"
    )


def replicate_tree(tree: Any, mesh: Mesh) -> Any:
  """A replicated sharding for every leaf of `tree`."""
  return jax.tree.map(lambda _: replicated(mesh), tree)
