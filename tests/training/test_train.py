"""The trainer in-process on 8 CPU devices: optimiser, step, 1-vs-8-device parity, resume
equality and restoring onto another mesh."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments import digits
from mlvae_jax import config_helpers, train

# Same seed and data on 1 and 8 devices: only the order of floating-point reductions differs
from mlvae_jax.training import loop, metrics_writer, restore, setup as state_lib
# (sums over the batch are split across devices), so losses agree to float32 rounding.
PARITY_RTOL = 1e-5


# The paper objective, so the runs tested here and those launch.py starts (tests/test_launch.py)
# share one config: a checkpoint written by one is read by the other.
SMOKE_ARG = "paper,smoke"


def smoke_config(**overrides) -> ml_collections.ConfigDict:
  """The digits smoke run (4 steps, checkpoints at 2 and 4) with dotted-key overrides."""
  config = digits.get_config(SMOKE_ARG)
  for key, value in overrides.items():
    config_helpers.set_path(config, key, value)
  return config


def params_at(workdir, config, step=None):
  state, _, _ = restore.restore_state(config, str(workdir), step)
  return jax.device_get(state.params)


def losses(workdir) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in metrics_writer.read_metrics(str(workdir)) if "train/loss" in r}


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory):
  """A finished smoke run on all 8 devices (shared by the tests that read one)."""
  workdir = tmp_path_factory.mktemp("eight")
  config = smoke_config(**{"mesh.data": 8, "train.log_every": 1})
  final = train.train_and_evaluate(config, str(workdir))
  return workdir, config, final


def test_schedule_warmup_then_cosine_to_zero():
  optim = ml_collections.ConfigDict(
      {"learning_rate": 1.0, "warmup_steps": 10, "schedule": "cosine", "grad_clip_norm": 0.0}
  )
  schedule = state_lib.make_schedule(optim, num_steps=110)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_train_step_reports_grad_norm_before_clipping_and_lr():
  optim = ml_collections.ConfigDict(
      {"learning_rate": 0.1, "warmup_steps": 0, "schedule": "constant", "grad_clip_norm": 1.0,
       "weight_decay": 0.0}
  )
  tx, schedule = state_lib.make_optimizer(optim, num_steps=10)
  loss_fn = lambda p, batch, rng, step: (jnp.sum((p["w"] - batch["x"]) ** 2), {"loss": 0.0})  # noqa: E731
  params = {"w": jnp.zeros(3)}
  state = state_lib.TrainState(jnp.int32(0), params, tx.init(params), jax.random.key_data(jax.random.key(0)))
  state, metrics = jax.jit(loop.make_train_step(loss_fn, tx, schedule))(state, {"x": jnp.full(3, 10.0)})
  np.testing.assert_allclose(metrics["grad_norm"], 20 * np.sqrt(3), rtol=1e-6)
  np.testing.assert_allclose(metrics["learning_rate"], 0.1)
  assert int(state.step) == 1


def test_weight_decay_is_decoupled_and_follows_the_schedule():
  """AdamW: with a zero gradient Adam's step is 0, so each step only shrinks the parameters
  by learning_rate(t) * weight_decay; decay 0 keeps plain Adam's state (older checkpoints)."""
  optim = ml_collections.ConfigDict(
      {"learning_rate": 0.1, "warmup_steps": 2, "schedule": "constant", "grad_clip_norm": 0.0,
       "weight_decay": 0.5}
  )
  tx, schedule = state_lib.make_optimizer(optim, num_steps=10)
  params = {"w": jnp.array([1.0, -2.0, 4.0])}
  opt_state = tx.init(params)
  expected = np.array([1.0, -2.0, 4.0])
  for step in range(4):
    updates, opt_state = tx.update({"w": jnp.zeros(3)}, opt_state, params)
    params = optax.apply_updates(params, updates)
    expected = expected * (1 - float(schedule(step)) * 0.5)
    np.testing.assert_allclose(params["w"], expected, rtol=1e-6)
  assert not np.allclose(expected, [1.0, -2.0, 4.0])  # the warm-up ended and decay acted
  optim.weight_decay = 0.0
  tx, schedule = state_lib.make_optimizer(optim, num_steps=10)
  assert (jax.tree.structure(tx.init(params))
          == jax.tree.structure(optax.adam(schedule).init(params)))


def test_writes_every_metric_the_issue_asks_for(eight_device_run):
  workdir, _, final = eight_device_run
  records = metrics_writer.read_metrics(str(workdir))
  train_keys = set().union(*(r for r in records if "train/loss" in r))
  for key in ("train/elbo", "train/reconstruction", "train/kl_style", "train/kl_content",
              "train/grad_norm", "train/learning_rate", "perf/obs_per_sec", "perf/step_time_s"):
    assert key in train_keys
  assert [r["step"] for r in records if "val/elbo" in r] == [2, 4]  # keep-best saves at 2 and 4
  assert os.listdir(workdir / metrics_writer.TENSORBOARD_DIR)[0].startswith("events.out.tfevents")
  assert json.loads((workdir / "final_metrics.json").read_text())["step"] == 4
  # One validation number: what keep-best ranked at step 4 is what the report prints.
  reported = json.loads((workdir / "eval" / "metrics.json").read_text())
  assert records[-1]["val/elbo"] == final["val/elbo"] == reported["val/elbo"]
  assert "| elbo | %.4f |" % final["val/elbo"] in (workdir / "eval" / "report.md").read_text()


def test_same_losses_on_one_and_eight_devices(eight_device_run, tmp_path):
  workdir8, config8, _ = eight_device_run
  config1 = smoke_config(**{"mesh.data": 1, "train.log_every": 1})
  train.train_and_evaluate(config1, str(tmp_path))
  loss1, loss8 = losses(tmp_path), losses(workdir8)
  assert sorted(loss1) == [1, 2, 3, 4]
  np.testing.assert_allclose([loss1[s] for s in sorted(loss1)], [loss8[s] for s in sorted(loss8)],
                             rtol=PARITY_RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_at(tmp_path, config1), params_at(workdir8, config8))


def test_resumed_run_equals_uninterrupted_run_bitwise(eight_device_run, tmp_path):
  workdir, config, _ = eight_device_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # as if killed after the checkpoint at step 2
  train.train_and_evaluate(config, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, params_at(tmp_path, config, 4),
               params_at(workdir, config, 4))
  assert losses(tmp_path) == losses(workdir)  # and the metrics file reads as one run


def test_restore_an_eight_device_run_onto_one_device(eight_device_run):
  workdir, config, final = eight_device_run
  one = smoke_config(**{"mesh.data": 1})
  state, step, _ = restore.restore_state(one, str(workdir))
  assert step == 4
  assert {len(leaf.sharding.device_set) for leaf in jax.tree.leaves(state)} == {1}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params_at(workdir, config))
  metrics = train.evaluate(one, str(workdir))
  assert metrics["step"] == 4  # the best checkpoint by val/elbo, the one it says it evaluated
  assert json.loads((workdir / "eval" / "metrics.json").read_text())["checkpoint"].endswith(
      os.path.join("checkpoints", "4"))
  np.testing.assert_allclose(metrics["val/elbo"], final["val/elbo"], rtol=PARITY_RTOL)
