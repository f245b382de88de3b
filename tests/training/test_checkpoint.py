"""Checkpoints of simple pytrees: items saved together, keep-N and keep-best, restore onto
another mesh, shape mismatches, and reading without writing."""

import logging
import os
import sys

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mlvae_jax.training import checkpoint, sharding
from mlvae_jax import configs
from mlvae_jax.training.workdir import SetupError


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: dict
  opt_state: object
  rng: jax.Array


def _train_config(**overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({"keep_checkpoints": 2, "keep_best_metric": ""})
  config.update(overrides)
  return config


def _state(width: int = 4, value: float = 1.0) -> _State:
  params = {"w": jnp.full((3, width), value), "b": jnp.zeros(width)}
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  return _State(jnp.int32(0), params, tx.init(params), jax.random.key_data(jax.random.key(0)))


def _target(state: _State, devices: int) -> _State:
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": devices}))
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding.replicated(mesh)), state
  )


def _save_steps(workdir, steps, train_config, metrics=lambda step: None):
  checkpoints = checkpoint.Checkpoints(str(workdir), train_config)
  config = ml_collections.ConfigDict({"seed": 3})
  for step in steps:
    state = jax.device_put(_state(value=float(step)), sharding.replicated(
        sharding.make_mesh(ml_collections.ConfigDict({"data": 8}))))
    checkpoints.save(step, state, {"epoch": step}, config, metrics(step))
  checkpoints.close()


def test_state_iterator_and_config_restore_together_on_one_device(tmp_path):
  _save_steps(tmp_path, [5], _train_config())
  reader = checkpoint.Checkpoints(str(tmp_path), read_only=True)
  assert reader.steps() == [5]
  saved = reader.saved_config(5)  # the saved value, and defaults for keys it did not have
  assert saved["seed"] == 3 and saved == configs.fill_later_defaults({"seed": 3})
  state, data_state = reader.restore(5, _target(_state(), devices=1))
  reader.close()
  assert data_state == {"epoch": 5}
  assert state.params["w"].sharding.mesh.devices.size == 1
  np.testing.assert_array_equal(state.params["w"], np.full((3, 4), 5.0))


def test_keeps_the_latest_n(tmp_path):
  _save_steps(tmp_path, [1, 2, 3, 4], _train_config())
  assert checkpoint.Checkpoints(str(tmp_path), read_only=True).steps() == [3, 4]


def test_keeps_the_best_by_a_validation_metric_as_well(tmp_path):
  elbo = {1: -50.0, 2: -10.0, 3: -30.0, 4: -40.0}
  config = _train_config(keep_best_metric="val/elbo")
  _save_steps(tmp_path, [1, 2, 3, 4], config, lambda step: {"val/elbo": elbo[step]})
  reader = checkpoint.Checkpoints(str(tmp_path), config, read_only=True)
  assert reader.steps() == [2, 3, 4]
  assert reader.best_step() == 2


@pytest.mark.parametrize("metric, expected", [
    ("val/elbo", ("val/elbo", "max")), ("val/loss", ("val/loss", "min")),
    ("val/bits_per_dim", ("val/bits_per_dim", "min")), ("min:val/kl_style", ("val/kl_style", "min")),
])
def test_best_mode(metric, expected):
  assert checkpoint.best_mode(metric) == expected


def test_shape_mismatch_is_one_line_naming_the_parameter(tmp_path):
  _save_steps(tmp_path, [1], _train_config())
  reader = checkpoint.Checkpoints(str(tmp_path), read_only=True)
  with pytest.raises(SetupError, match=r"'params.b' is \(4,\) there and \(6,\)") as error:
    reader.restore(1, _target(_state(width=6), devices=1))
  assert "\n" not in str(error.value)


def test_reading_a_workdir_creates_nothing(tmp_path):
  reader = checkpoint.Checkpoints(str(tmp_path / "absent"), read_only=True)
  assert reader.steps() == []
  reader.close()
  assert not os.path.exists(tmp_path / "absent")


def _error_record(logger: str, pathname: str, message: str) -> logging.LogRecord:
  try:
    raise ValueError("OUT_OF_RANGE: Failed writing: File too large")
  except ValueError:
    return logging.LogRecord(logger, logging.ERROR, pathname, 1, message, None, sys.exc_info())


def test_a_failed_saves_background_tracebacks_are_dropped_and_others_kept(tmp_path):
  """A failed save is one line (SaveError): orbax's traceback of the write and asyncio's
  'Task exception was never retrieved' for its write tasks (logged whenever the task is
  collected, so only sometimes) are dropped; other errors still show."""
  checkpoint.Checkpoints(str(tmp_path / "run"), configs.base_config().train).close()
  orbax_file = f"/site-packages{os.sep}orbax{os.sep}checkpoint/_src/serialization/serialization.py"
  asyncio_file = "/usr/lib/python3.11/asyncio/base_events.py"
  unretrieved = ("Task exception was never retrieved\nfuture: <Task finished coro=<"
                 f"write_fragment() done, defined at {orbax_file}:188>>")
  asyncio_logger = logging.getLogger("asyncio")
  assert not asyncio_logger.filter(_error_record("asyncio", asyncio_file, unretrieved))
  assert asyncio_logger.filter(_error_record(
      "asyncio", asyncio_file, "Task exception was never retrieved\nfuture: <Task other>"))
  absl_logger = logging.getLogger("absl")
  assert not absl_logger.filter(_error_record("absl", orbax_file, "write failed"))
  assert absl_logger.filter(_error_record("absl", "/x/mlvae_jax/train.py", "other"))
