"""Mesh, shardings and the global batch (8 CPU devices from conftest)."""

import jax
import ml_collections
import numpy as np
import pytest

from mlvae_jax.training import sharding
from mlvae_jax.training.feed import host as host_feed
from mlvae_jax.training.workdir import SetupError


def _mesh(data: int) -> jax.sharding.Mesh:
  return sharding.make_mesh(ml_collections.ConfigDict({"data": data}))


def test_mesh_uses_all_devices_by_default_with_auto_axes():
  mesh = _mesh(-1)
  assert mesh.shape == {"data": 8}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_mesh_on_a_subset_of_devices():
  assert _mesh(1).devices.tolist() == [jax.devices()[0]]


@pytest.mark.parametrize("data", [0, 9, -2])
def test_mesh_size_out_of_range_is_refused(data):
  with pytest.raises(SetupError, match="config.mesh.data"):
    _mesh(data)


def test_batch_not_divisible_by_devices_names_a_fix():
  with pytest.raises(SetupError, match=r"batch_size=60 is not divisible by the 8 devices.*such as 56"):
    sharding.check_batch_size(60, _mesh(8))
  sharding.check_batch_size(60, _mesh(1))


def test_global_batch_is_sharded_along_observations():
  mesh = _mesh(8)
  host = {"x": np.arange(32, dtype=np.float32).reshape(16, 2), "mask": np.ones(16, bool)}
  batch = host_feed.global_batch(host, mesh)
  assert batch["x"].sharding == sharding.batch_sharding(mesh)
  assert [s.data.shape for s in batch["x"].addressable_shards] == [(2, 2)] * 8
  np.testing.assert_array_equal(np.asarray(batch["x"]), host["x"])


def test_single_process_needs_no_distributed_setup(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert sharding.initialize_distributed() is False
