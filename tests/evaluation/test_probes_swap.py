"""Known answers for the leakage measures: probes (linear, k-NN, MLP) and swap consistency."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from mlvae_jax import configs
from mlvae_jax.evaluation import pixel_classifier, probes, swap


def _split(features, labels, n_train):
  return features[:n_train], labels[:n_train], features[n_train:], labels[n_train:]


@pytest.mark.parametrize("kind", probes.PROBES)
def test_code_independent_of_label_gives_chance(kind):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 3000)
  codes = rng.normal(size=(3000, 6))
  accuracy = probes.probe_accuracy(*_split(codes, labels, 2000), kind)
  assert abs(accuracy - 0.1) < 0.05  # chance is 0.1; 1000 test points: sd 0.0095


def test_non_linear_leak_is_seen_by_knn_and_mlp_but_not_by_a_linear_probe():
  """The label is the radius of a ring: linearly invisible, obvious to neighbours."""
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, 4000)
  angle = rng.uniform(0, 2 * np.pi, 4000)
  radius = 1.0 + labels + rng.normal(scale=0.05, size=4000)
  codes = np.stack([radius * np.cos(angle), radius * np.sin(angle)], -1)
  accuracy = probes.probe_all(*_split(codes, labels, 3000))
  assert accuracy["linear"] < 0.45  # chance 0.25
  assert accuracy["knn"] > 0.95
  assert accuracy["mlp"] > 0.9


@pytest.fixture(scope="module")
def digits():
  data = load_digits()
  images = (data.images / 16.0).astype(np.float32)[..., None]
  return images, data.target.astype(np.int64)


@pytest.fixture(scope="module")
def judge(digits):
  images, labels = digits
  return pixel_classifier.fit_pixel_classifier(images[:1400], labels[:1400], epochs=20, hidden=128)


def test_pixel_classifier_reads_held_out_digits(judge, digits):
  images, labels = digits
  assert judge.accuracy(images[1400:], labels[1400:]) > 0.9


def test_a_judge_with_the_models_encoder_reads_held_out_digits(digits):
  images, labels = digits
  model_config = configs.base_config().model
  model_config.hidden = 128
  module = pixel_classifier.encoder_classifier(model_config, images.shape[1:], 10)
  judge = pixel_classifier.fit_pixel_classifier(images[:1400], labels[:1400], epochs=20, module=module)
  assert isinstance(judge.module, pixel_classifier.EncoderClassifier)
  assert judge.accuracy(images[1400:], labels[1400:]) > 0.8  # measured 0.889 (chance 0.1)


def _encode(images, labels):
  """Content = the label (one-hot), style = the image itself: a perfectly split code."""
  def encode(x):
    rows = np.array([np.flatnonzero(np.all(images == xi, axis=(1, 2, 3)))[0] for xi in x])
    return np.eye(10)[labels[rows]], rows

  return encode


def test_decoder_that_ignores_content_fails_and_one_that_uses_it_passes(judge, digits):
  images, labels = digits
  test_x, test_labels = images[1400:], labels[1400:]
  encode = _encode(test_x, test_labels)
  prototypes = np.stack([images[:1400][labels[:1400] == k].mean(0) for k in range(10)])
  ignores_content = swap.swap_consistency(
      encode, lambda c, s: test_x[s], judge.predict, test_x, test_labels, 500, seed=0)
  uses_content = swap.swap_consistency(
      encode, lambda c, s: prototypes[np.argmax(c, -1)], judge.predict, test_x, test_labels, 500, seed=0)
  assert ignores_content["content"] < 0.05 and ignores_content["style"] > 0.85
  assert uses_content["content"] > 0.95 and uses_content["style"] < 0.05
  for result in (ignores_content, uses_content):
    assert sum(result.values()) == pytest.approx(1.0)


def test_pairs_always_differ_in_label():
  labels = np.array([0, 0, 0, 0, 1])
  a, b = swap.different_label_pairs(labels, 200, np.random.default_rng(0))
  assert np.all(labels[a] != labels[b])
  with pytest.raises(ValueError, match="at least two different labels"):
    swap.different_label_pairs(np.zeros(5, int), 3, np.random.default_rng(0))


def test_factor_levels_are_quantised_into_equal_runs_of_consecutive_levels():
  from mlvae_jax.evaluation.swap import quantise

  np.testing.assert_array_equal(quantise(np.arange(32), 32, 8), np.repeat(np.arange(8), 4))
  np.testing.assert_array_equal(quantise(np.arange(3), 3, 8), np.arange(3))  # few levels kept


def test_per_factor_gains_with_knn_see_a_factor_hidden_in_a_ring():
  from mlvae_jax.evaluation.disentanglement import factor_gains

  rng = np.random.default_rng(2)
  factor = rng.integers(0, 4, 3000)
  angle = rng.uniform(0, 2 * np.pi, 3000)
  ring = np.stack([(1 + factor) * np.cos(angle), (1 + factor) * np.sin(angle)], -1)
  noise = rng.normal(size=(3000, 2))
  codes = {"content": (noise[:2000], noise[2000:]), "style": (ring[:2000], ring[2000:])}
  factors = factor[:, None]
  gains = {probe: factor_gains(codes, factors[:2000], factors[2000:], ["f"], {"f"}, 8, probe)
           for probe in ("linear", "knn")}
  assert gains["knn"]["f/style"] > 0.9 and gains["linear"]["f/style"] < 0.3
  assert gains["knn"]["leakage"] > 0.9  # f is a content factor read from style
  assert gains["knn"]["f/content"] < 0.05
