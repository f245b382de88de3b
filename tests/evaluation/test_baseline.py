"""The parameter-free baseline: known answers where a factor is exactly a pixel statistic,
group means against a loop, and the evaluator's codes independent of any parameters."""

import numpy as np
import pytest

from mlvae_jax import configs
from mlvae_jax.data import shapes
from mlvae_jax.evaluation import EVALUATORS, EvalContext
from mlvae_jax.evaluation.baseline import group_means, group_pca_codes, moment_codes
from mlvae_jax.evaluation.disentanglement import factor_gains


PATTERNS = np.linalg.qr(np.random.default_rng(7).normal(size=(16, 2)))[0].T  # orthonormal


def _pattern_images(rng, num):
  """4x4 images = group level x one pattern + style level x the other: the group's factor
  lives only between groups, the style's only within them."""
  patterns = PATTERNS
  group, style = rng.integers(0, 6, num), rng.integers(0, 5, num)
  x = group[:, None] * patterns[0] + style[:, None] * patterns[1]
  return x.reshape(num, 4, 4, 1), np.stack([group, style], 1)


def test_group_means_match_a_loop():
  rng = np.random.default_rng(0)
  x, labels = rng.normal(size=(50, 3)), rng.integers(0, 7, 50)
  expected = np.stack([x[labels == label].mean(axis=0) for label in labels])
  np.testing.assert_allclose(group_means(x, labels), expected, rtol=1e-12)


def test_group_pca_reads_the_group_factor_from_content_and_the_other_from_style():
  rng = np.random.default_rng(1)
  fit_x, fit_factors = _pattern_images(rng, 600)
  test_x, test_factors = _pattern_images(rng, 300)
  codes = group_pca_codes(fit_x, fit_factors[:, 0], test_x, content_dim=1, style_dim=1)
  gains = factor_gains(codes, fit_factors, test_factors, ("group", "style"), {"group"}, bins=8)
  assert gains["group/content"] > 0.95 and gains["style/style"] > 0.95
  assert gains["leakage"] < 0.1
  # A one-dimensional content code is the group pattern's coefficient, up to sign and offset.
  content = codes["content"][1][:, 0]
  assert abs(np.corrcoef(content, test_factors[:, 0])[0, 1]) > 0.99


@pytest.mark.slow
def test_moment_style_holds_the_peak_intensity_and_the_position():
  """grouped_shapes' brightness is exactly each image's peak pixel: the style code reads it."""
  rng = np.random.default_rng(2)
  fit_f, test_f = shapes.sample_factors(rng, 800), shapes.sample_factors(rng, 400)
  render = lambda f: shapes.render(f, 32).astype(np.float32) / 255
  codes = moment_codes(render(fit_f), render(test_f), content_dim=6, harmonics=(1, 2, 3, 4),
                       rule="argmax")
  np.testing.assert_allclose(codes["style"][1][:, -1], shapes.BRIGHTNESSES[test_f[:, 5]],
                             atol=0.01)
  gains = factor_gains(codes, shapes.identifiable_factors(fit_f), shapes.identifiable_factors(test_f),
                       shapes.FACTOR_NAMES, {"shape", "scale"}, bins=8)
  assert gains["brightness/style"] > 0.95
  for column, factor in ((0, 3), (1, 4)):  # the centroid follows the position
    assert np.corrcoef(codes["style"][1][:, column], test_f[:, factor])[0, 1] > 0.98
  assert codes["content"][1].shape == (400, 6)


def _scenes_config(tmp_path, **settings):
  config = configs.base_config()
  config.data.update(name="grouped_scenes", data_dir=str(tmp_path), num_examples=600,
                     group_by="shape,scale")
  config.evals.baseline = configs.evaluator("baseline", max_examples=300, **settings)
  return config


@pytest.mark.slow
def test_the_evaluator_never_reads_the_parameters(tmp_path):
  config = _scenes_config(tmp_path)
  ctx = EvalContext(config=config, setup=None, output_dir=tmp_path)
  baseline = EVALUATORS["baseline"](ctx, configs.resolved_entry(config, "baseline"))
  first = baseline.run(None)
  assert baseline.run({"encoder": np.ones(3)}) == first
  names = [f"{f}/{c}" for f in ("floor_hue", "shape", "orientation") for c in ("content", "style")]
  assert set(names) <= set(first)
  assert first["score"] == pytest.approx(first["on_target"] - first["leakage"])
  # A fresh evaluator computes the same codes: nothing is drawn at random.
  again = EVALUATORS["baseline"](ctx, configs.resolved_entry(config, "baseline")).run(None)
  assert again == first


def test_bad_kind_and_factorless_datasets_are_named(tmp_path):
  config = _scenes_config(tmp_path, kind="moment")
  ctx = EvalContext(config=config, setup=None, output_dir=tmp_path)
  with pytest.raises(ValueError, match=r"kind='moment' is unknown; use one of \('group_pca'"):
    EVALUATORS["baseline"](ctx, configs.resolved_entry(config, "baseline"))
  config = configs.base_config()
  config.data.data_dir = str(tmp_path)
  config.evals.baseline = configs.evaluator("baseline")
  ctx = EvalContext(config=config, setup=None, output_dir=tmp_path)
  with pytest.raises(ValueError, match="needs ground-truth factors, which dataset 'digits' lacks"):
    EVALUATORS["baseline"](ctx, configs.resolved_entry(config, "baseline"))
