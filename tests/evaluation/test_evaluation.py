"""Evaluators: known answers on a hand-built model and on hand-built codes, a briefly trained
digits model (seen and unseen digits), and the config contract (types, settings, cadence,
keep-best)."""

import json
import math

import jax
import ml_collections
import numpy as np
import optax
import pytest

from mlvae_jax import configs, data, evaluation, objectives
from mlvae_jax.training import setup as state
from mlvae_jax.evaluation import accumulation, disentanglement
from mlvae_jax.training.workdir import SetupError

CONTENT_LOGVAR = 0.7  # the hand-built model's content log-variance for every observation
STYLE_LOGVAR = -0.4


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _digits_config(tfds_dir, **evals):
  config = configs.base_config()
  config.data.data_dir = tfds_dir
  config.data.batch_size, config.data.num_groups, config.data.group_size = 64, 8, 8
  config.data.unseen_groups = "8,9"
  config.model.hidden = 128
  config.evals = ml_collections.ConfigDict(evals)
  return config


def _train(config, model, steps):
  """A few hundred plain optax steps on the real grouped pipeline; host parameters."""
  it = data.make_batch_iterator(config.data, "train", seed=config.seed)
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
  return jax.device_get(params)


def _constant_posterior_params(setup):
  """Parameters under which every observation has content N(0, e^CONTENT_LOGVAR), style
  N(0, e^STYLE_LOGVAR) and Bernoulli logits 0 for every pixel, whatever x and the noise."""
  params = jax.tree.map(np.zeros_like, jax.device_get(setup.init().params))
  heads = params["encoder"]["_NormalHeads_0"]
  dc, ds = setup.config.model.content_dim, setup.config.model.style_dim
  heads["content"]["bias"] = np.r_[np.zeros(dc), np.full(dc, CONTENT_LOGVAR)].astype(np.float32)
  heads["style"]["bias"] = np.r_[np.zeros(ds), np.full(ds, STYLE_LOGVAR)].astype(np.float32)
  return params


def _closed_form_group_terms(n, config, pixels):
  """ELBO terms of a group of n members under `_constant_posterior_params`, in float64."""
  dc, ds = config.model.content_dim, config.model.style_dim
  reconstruction = -n * pixels * math.log(2.0)  # x * 0 - softplus(0) per pixel
  kl_style = n * 0.5 * ds * (math.exp(STYLE_LOGVAR) - 1.0 - STYLE_LOGVAR)
  pooled_logvar = CONTENT_LOGVAR - math.log(n)  # the product of n equal Normals
  kl_content = 0.5 * dc * (math.exp(pooled_logvar) - 1.0 - pooled_logvar)
  return reconstruction, kl_style, kl_content


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, tfds_dir):
  config = _digits_config(
      tfds_dir,
      val=configs.evaluator("elbo", split="validation"),
      test=configs.evaluator("elbo", split="test"),
      unseen=configs.evaluator("elbo", split="unseen"),
      classify=configs.evaluator("classify"),
      curve=configs.evaluator("accumulation", split="unseen"),
      images=configs.evaluator("images"),
  )
  setup = state.setup(config)
  params = _train(config, setup.model, 400)
  workdir = tmp_path_factory.mktemp("work")
  evaluators = evaluation.Evaluators(config, setup, workdir)
  metrics = evaluators.run(params)
  evaluators.write({"step": 400, **metrics}, 400)
  return config, workdir, metrics


def test_report_files_are_written(digits_run):
  _, workdir, metrics = digits_run
  saved = json.loads((workdir / "eval/metrics.json").read_text())
  assert saved["step"] == 400 and saved["classify/content_accuracy"] == metrics["classify/content_accuracy"]
  report = (workdir / "eval/report.md").read_text()
  assert "## classify: classify on validation" in report and "## curve: accumulation on unseen" in report
  for image in ("swap.png", "reconstructions.png"):
    assert f"![{image}]({image})" in report
    assert (workdir / "eval" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_content_code_identifies_seen_classes_and_style_does_less(digits_run):
  _, _, metrics = digits_run
  assert metrics["classify/content_accuracy"] > 0.7, metrics
  assert metrics["classify/content_accuracy"] > metrics["classify/style_accuracy"] + 0.15, metrics


def test_pooling_identifies_unseen_digits(digits_run):
  _, _, m = digits_run
  assert m["curve/num_groups"] == 2 and m["curve/chance"] == 0.5  # digits 8 and 9 held out
  assert m["curve/accuracy_k16"] > m["curve/chance"] + 0.2, m
  assert m["curve/accuracy_k16"] >= m["curve/accuracy_k1"] - 0.02, m


def test_unseen_digits_are_modelled_worse_than_seen_ones(digits_run):
  _, _, m = digits_run
  for name in ("val", "test", "unseen"):
    np.testing.assert_allclose(
        m[f"{name}/elbo"], m[f"{name}/reconstruction"] - m[f"{name}/kl_style"] - m[f"{name}/kl_content"],
        rtol=1e-4)
  # Trained on digits 0-7 only: 8 and 9 are reconstructed worse, per group and per pixel.
  assert m["unseen/reconstruction"] < m["test/reconstruction"], m
  assert m["unseen/bits_per_dim"] > m["test/bits_per_dim"], m


@pytest.mark.parametrize("max_batches", [0, 1])
def test_unseen_elbo_is_the_group_weighted_closed_form(tfds_dir, tmp_path, max_batches):
  """Every term is known in closed form per group size; the evaluator must average it over
  the groups of the unseen split's epoch (ragged groups, the last batch partial)."""
  config = _digits_config(tfds_dir, unseen=configs.evaluator("elbo", split="unseen",
                                                             max_batches=max_batches))
  config.data.update(group_policy="uniform", group_size_min=2, group_size_max=16)
  setup = state.setup(config)
  metrics = evaluation.Evaluators(config, setup, tmp_path).run(_constant_posterior_params(setup))

  pixels = math.prod(setup.observation_shape)
  batches = list(data.make_batch_iterator(config.data, "unseen", seed=config.seed, num_epochs=1))
  batches = batches[:max_batches or None]
  assert len(batches) > 1 or max_batches == 1
  terms, bits = [], []
  for batch in batches:
    sizes = np.bincount(batch["group_ids"][batch["mask"]])
    sizes = sizes[sizes > 0]
    group_terms = np.array([_closed_form_group_terms(n, config, pixels) for n in sizes])
    terms.append(group_terms)
    elbo = group_terms[:, 0] - group_terms[:, 1] - group_terms[:, 2]
    bits.append((len(sizes), -elbo.sum() / (sizes.sum() * pixels * math.log(2.0))))
  terms = np.concatenate(terms)
  expected = dict(zip(("reconstruction", "kl_style", "kl_content"), terms.mean(axis=0)))
  expected["elbo"] = expected["reconstruction"] - expected["kl_style"] - expected["kl_content"]
  expected["bits_per_dim"] = sum(g * b for g, b in bits) / sum(g for g, _ in bits)
  for key, value in expected.items():
    np.testing.assert_allclose(metrics[f"unseen/{key}"], value, rtol=1e-5, err_msg=key)


def test_pooled_content_variance_is_the_exact_product(tfds_dir, tmp_path):
  config = _digits_config(tfds_dir, curve=configs.evaluator(
      "accumulation", split="unseen", support_sizes=(1, 3, 16), repeats=2))
  setup = state.setup(config)
  metrics = evaluation.Evaluators(config, setup, tmp_path).run(_constant_posterior_params(setup))
  for k in (1, 3, 16):  # k members of log-variance L pool to L - log k (a harmonic mean: L)
    np.testing.assert_allclose(metrics[f"curve/content_logvar_k{k}"], CONTENT_LOGVAR - math.log(k),
                               atol=1e-5)


def test_assignment_weighs_distance_by_the_pooled_variance():
  group_mu, group_logvar = np.array([[0.0], [3.0]]), np.log([[100.0], [0.01]])
  query_mu, query_logvar = np.array([[2.0], [3.05], [-1.0]]), np.log([[0.01], [0.01], [0.01]])
  # 2.0 is nearer the mean 3.0, but 100 sd units beyond its variance; N(0, 100) explains it.
  np.testing.assert_array_equal(
      accumulation.assign(query_mu, query_logvar, group_mu, group_logvar), [0, 1, 0])


def test_support_draws_k_of_each_value_and_queries_everything_else():
  labels = np.array([3, 1, 3, 3, 1, 1, 1, 7, 7, 3])
  values = np.unique(labels)
  support, queries = accumulation.draw_support(labels, values, 2, np.random.default_rng(0))
  for value, members in zip(values, support):
    assert len(set(members)) == 2 and np.all(labels[members] == value)
  chosen = np.concatenate(support)
  np.testing.assert_array_equal(np.sort(np.concatenate([chosen, queries])), np.arange(len(labels)))
  again, _ = accumulation.draw_support(labels, values, 2, np.random.default_rng(0))
  np.testing.assert_array_equal(np.concatenate(again), chosen)  # a seed fixes the draw


def _factors(n, rng):
  """Independent factors: shape (3 values), scale (4) are content; x (5), y (6) style."""
  return np.stack([rng.integers(0, k, n) for k in (3, 4, 5, 6)], axis=1)


def _one_hot(factors, columns):
  return np.concatenate([np.eye(factors[:, j].max() + 1)[factors[:, j]] for j in columns], axis=1)


@pytest.mark.parametrize("swap, score", [(False, 1.0), (True, -1.0)])
def test_factor_gains_of_codes_that_copy_the_factors(swap, score):
  rng = np.random.default_rng(0)
  fit, test = _factors(600, rng), _factors(400, rng)
  content = (_one_hot(fit, [0, 1]), _one_hot(test, [0, 1]))
  style = (_one_hot(fit, [2, 3]), _one_hot(test, [2, 3]))
  codes = {"content": style, "style": content} if swap else {"content": content, "style": style}
  m = disentanglement.factor_gains(codes, fit, test, ("shape", "scale", "x", "y"),
                                   {"shape", "scale"}, bins=8)
  own, other = ("style", "content") if swap else ("content", "style")
  for factor in ("shape", "scale"):
    assert m[f"{factor}/{own}"] == pytest.approx(1.0) and m[f"{factor}/{other}"] < 0.1, m
  np.testing.assert_allclose(m["score"], score, atol=0.1)


def test_factor_gains_bin_a_many_valued_factor_by_quantiles():
  values = np.arange(100.0)
  np.testing.assert_array_equal(np.bincount(disentanglement.discretise(values, values, bins=4)),
                                [25, 25, 25, 25])


def test_disentanglement_on_grouped_shapes_reports_every_factor_and_code(tmp_path):
  config = configs.base_config()
  config.data.update(name="grouped_shapes", data_dir=str(tmp_path / "tfds"), num_examples=1200,
                     group_by="shape,scale", batch_size=64, num_groups=8, group_size=8)
  config.model.update(family="conv", hidden=32, activation="relu")
  config.evals = ml_collections.ConfigDict(
      {"dis": configs.evaluator("disentanglement", max_examples=300)})
  setup = state.setup(config)
  metrics = evaluation.Evaluators(config, setup, tmp_path / "work").run(jax.device_get(setup.init().params))
  factors = ("shape", "scale", "rotation", "x", "y", "brightness")
  assert set(metrics) == {f"dis/{f}/{c}" for f in factors for c in ("content", "style")} | {
      "dis/on_target", "dis/leakage", "dis/score"}


@pytest.mark.parametrize("judge", ["mlp", "encoder"])
def test_swap_judged_by_a_pixel_mlp_or_by_the_runs_encoder(tfds_dir, tmp_path, judge):
  config = _digits_config(tfds_dir, swap=configs.evaluator(
      "swap", judge=judge, fit_examples=600, max_examples=300, num_pairs=100, classifier_epochs=8))
  setup = state.setup(config)
  evaluators = evaluation.Evaluators(config, setup, tmp_path)
  judge_module = evaluators.evaluators["swap"].judges["group"].module
  assert type(judge_module).__name__ == {"mlp": "PixelMLP", "encoder": "EncoderClassifier"}[judge]
  m = evaluators.run(jax.device_get(setup.init().params))
  assert m["swap/content"] + m["swap/style"] + m["swap/neither"] == pytest.approx(1.0)
  assert m["swap/classifier_accuracy"] > 0.6, m  # 8 digits (chance 0.125) from 600 images


def test_codes_are_encoded_once_per_parameters(tfds_dir, tmp_path):
  config = _digits_config(tfds_dir, a=configs.evaluator("classify"))
  setup = state.setup(config)
  ctx = evaluation.EvalContext(config, setup, tmp_path)
  params = jax.device_get(setup.init().params)
  first = ctx.codes(params, "test", 100)
  assert ctx.codes(params, "test", 100) is first
  assert ctx.codes(jax.tree.map(np.copy, params), "test", 100) is not first


def test_cadence_keep_best_and_the_last_step(tfds_dir, tmp_path):
  config = _digits_config(tfds_dir, val=configs.evaluator("elbo", split="validation", every=10),
                          classify=configs.evaluator("classify", every=0))
  config.train.keep_best_metric = "val/elbo"
  evaluators = evaluation.Evaluators(config, state.setup(config), tmp_path)
  assert evaluators.due(20, saving=False, last=False) == ["val"]
  assert evaluators.due(15, saving=False, last=False) == []
  assert evaluators.due(15, saving=True, last=False) == ["val"]  # keep-best needs it to save
  assert sorted(evaluators.due(15, saving=False, last=True)) == ["classify", "val"]
  assert not (tmp_path / "eval").exists()  # building evaluators writes nothing


@pytest.mark.parametrize("entry, keep_best, message", [
    (dict(type="clasify", split="test", every=0), "", r"config.evals.x.type='clasify' is unknown"),
    ({**configs.evaluator("classify").to_dict(), "bins": 3}, "", r"config.evals.x has setting 'bins'"),
    ({"type": "elbo", "split": "test", "every": 0}, "", r"config.evals.x lacks setting 'max_batches'"),
    (configs.evaluator("elbo", split="tset"), "", r"config.evals.x: unknown split 'tset'"),
    (configs.evaluator("elbo", every=-1), "", r"config.evals.x.every=-1 is invalid"),
    (configs.evaluator("elbo"), "val/elbo", r"names no evaluator; .* config.evals: \['x'\]"),
    (configs.evaluator("elbo"), "x/accuracy", r"evaluator 'x' reports no 'accuracy'"),
    (configs.evaluator("swap", judge="cnn"), "", r"config.evals.x: .*judge='cnn' is unknown; use one of \('mlp', 'encoder'\)"),
])
def test_bad_evaluator_configs_fail_in_one_line(tfds_dir, tmp_path, entry, keep_best, message):
  config = _digits_config(tfds_dir, x=ml_collections.ConfigDict(entry))
  config.train.keep_best_metric = keep_best
  with pytest.raises(SetupError, match=message) as error:
    evaluation.Evaluators(config, state.setup(config), tmp_path)
  assert "\n" not in str(error.value)


def test_disentanglement_needs_factors(tfds_dir, tmp_path):
  config = _digits_config(tfds_dir, dis=configs.evaluator("disentanglement"))
  with pytest.raises(SetupError, match="config.evals.dis: .*needs ground-truth factors"):
    evaluation.Evaluators(config, state.setup(config), tmp_path)


def test_config_helper_refuses_unknown_types_and_settings():
  with pytest.raises(ValueError, match="evals.<name>.type='clasify' is unknown"):
    configs.evaluator("clasify")
  with pytest.raises(ValueError, match="type 'images' has no setting 'grid_size'"):
    configs.evaluator("images", grid_size=4)


def test_every_registered_type_has_its_settings_in_the_config_schema():
  assert set(evaluation.EVALUATORS) == set(configs.EVALUATOR_SETTINGS)
