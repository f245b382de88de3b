"""Evaluation protocols on a briefly trained digits model and on grouped_shapes."""

import json

import jax
import numpy as np
import optax
import pytest

from mlvae_jax import configs, data, evaluation, models, objectives


def _digits_config(tmp_dir):
  config = configs.base_config()
  config.data.data_dir = str(tmp_dir)
  config.data.batch_size, config.data.num_groups, config.data.group_size = 64, 8, 8
  config.data.unseen_groups = "8,9"
  config.model.hidden = 128
  config.eval.evaluators = "elbo,classify,accumulation,images"
  return config


def _train(config, steps):
  """A few hundred plain optax steps on the real grouped pipeline."""
  it = data.make_batch_iterator(config.data, "train", seed=config.seed)
  model = models.build_model(config.model, it.observation_shape)
  params = model.init(jax.random.key(0), np.zeros((1, *it.observation_shape), np.float32))["params"]
  loss_fn = objectives.make_loss_fn(model, config)
  optimizer = optax.adam(config.optim.learning_rate)

  @jax.jit
  def step(params, opt_state, batch, rng):
    grads = jax.grad(lambda p: loss_fn(p, batch, rng)[0])(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  for i in range(steps):
    params, opt_state = step(params, opt_state, next(it), jax.random.key(i))
  return model, params


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
  config = _digits_config(tmp_path_factory.mktemp("tfds"))
  model, params = _train(config, 400)
  workdir = tmp_path_factory.mktemp("work")
  return config, workdir, evaluation.run_evaluators(config, params, model, workdir, step=400)


def test_report_files_are_written(digits_run):
  _, workdir, metrics = digits_run
  saved = json.loads((workdir / "eval/metrics.json").read_text())
  assert saved["step"] == 400 and saved["classify/content_accuracy"] == metrics["classify/content_accuracy"]
  report = (workdir / "eval/report.md").read_text()
  assert "## classify" in report and "swap.png" in report
  for image in ("swap.png", "reconstructions.png"):
    assert (workdir / "eval" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_content_code_identifies_seen_classes_and_style_does_less(digits_run):
  _, _, metrics = digits_run
  assert metrics["classify/content_accuracy"] > 0.7, metrics
  assert metrics["classify/content_accuracy"] > metrics["classify/style_accuracy"] + 0.15, metrics


def test_accumulation_on_unseen_groups_sharpens_and_improves(digits_run):
  _, _, m = digits_run
  assert m["accumulation/num_groups"] == 2  # digits 8 and 9 were held out
  logvars = [m[f"accumulation/unseen_content_logvar_k{k}"] for k in (1, 2, 4, 8, 16)]
  assert all(a > b for a, b in zip(logvars, logvars[1:])), logvars
  assert m["accumulation/unseen_accuracy_k16"] > m["accumulation/chance"] + 0.2, m
  assert m["accumulation/unseen_accuracy_k16"] >= m["accumulation/unseen_accuracy_k1"] - 0.02, m


def test_heldout_elbo_terms_are_consistent(digits_run):
  _, _, m = digits_run
  for split in ("validation", "test", "unseen"):
    np.testing.assert_allclose(
        m[f"elbo/{split}/elbo"],
        m[f"elbo/{split}/reconstruction"] - m[f"elbo/{split}/kl_style"] - m[f"elbo/{split}/kl_content"],
        rtol=1e-4)
  assert m["elbo/test/elbo"] > m["elbo/unseen/elbo"] - 50  # same order: unseen digits still decode


def test_disentanglement_on_grouped_shapes(tmp_path):
  config = configs.base_config()
  config.data.update(name="grouped_shapes", data_dir=str(tmp_path / "tfds"), num_examples=1200,
                     group_by="shape,scale", batch_size=64, num_groups=8, group_size=8)
  config.model.update(family="conv", hidden=64, activation="relu")
  config.eval.evaluators = "disentanglement"
  model, params = _train(config, 30)
  metrics = evaluation.run_evaluators(config, params, model, tmp_path / "work")
  for factor in ("shape", "scale", "rotation", "x", "y", "brightness"):
    for code in ("content", "style"):
      assert 0.0 <= metrics[f"disentanglement/{factor}/{code}"] <= 1.0
  assert metrics["disentanglement/score"] == pytest.approx(
      metrics["disentanglement/on_target"] - metrics["disentanglement/leakage"])


def test_disentanglement_needs_factors(digits_run, tmp_path):
  config, _, _ = digits_run
  config = config.copy_and_resolve_references()
  config.eval.evaluators = "disentanglement"
  model = models.build_model(config.model, (8, 8, 1))
  params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
  with pytest.raises(ValueError, match="needs ground-truth factors"):
    evaluation.run_evaluators(config, params, model, tmp_path)


def test_unknown_evaluator_is_named():
  config = configs.base_config()
  config.eval.evaluators = "elbo,clasify"
  with pytest.raises(ValueError, match="clasify"):
    evaluation.evaluator_names(config)
