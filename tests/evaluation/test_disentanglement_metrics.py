"""The disentanglement suite on codes whose answers are known, and on cases worked by hand."""

import math

import jax
import ml_collections
import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mutual_info_score, roc_auc_score

from mlvae_jax import configs, evaluation
from mlvae_jax.training import setup as state
from mlvae_jax.data import shapes
from mlvae_jax.evaluation import dci, mig, sap
from mlvae_jax.evaluation import disentanglement_metrics as dm
from mlvae_jax.evaluation import factor_sampling
from mlvae_jax.training.workdir import SetupError

pytestmark = pytest.mark.filterwarnings("ignore", category=ConvergenceWarning)


def _factors(rng, n=1500, levels=(5, 4, 6)):
  return np.stack([rng.integers(0, size, n) for size in levels], axis=1)


def _copied(rng, factors):
  """Each factor in its own code dimension, slightly blurred."""
  return factors + 0.05 * rng.normal(size=factors.shape)


def _rotated(factors):
  """The standardised factors mixed by a fixed rotation far from any axis permutation."""
  z = (factors - factors.mean(0)) / factors.std(0)
  return z @ stats.special_ortho_group.rvs(factors.shape[1], random_state=1)


@pytest.fixture(scope="module")
def toy():
  rng = np.random.default_rng(0)
  factors = _factors(rng)
  copied = _copied(rng, factors)
  return factors, copied, _rotated(factors), np.concatenate([copied, copied[:, :1]], axis=1)


# Hand-computed cases.

def test_discretise_uses_equal_width_bins_from_min_to_max():
  codes = np.array([[0.0, 5.0], [0.5, 5.0], [0.74, 5.0], [1.0, 5.0]])
  np.testing.assert_array_equal(dm.discretise(codes, 4), [[0, 0], [2, 0], [2, 0], [3, 0]])
  np.testing.assert_array_equal(dm.discretise(codes, 2)[:, 0], [0, 1, 1, 1])


def test_mutual_information_of_and_gate_by_hand():
  # c = f0 AND f1 over the four equally likely (f0, f1): p(c=0, f0=0) = 1/2,
  # p(c=0, f0=1) = 1/4, p(c=1, f0=1) = 1/4; p(c=0) = 3/4, p(f0) = 1/2.
  f0, c = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
  expected = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) \
      + 0.25 * math.log(0.25 / (0.25 * 0.5))
  assert dm.mutual_information(c, f0) == pytest.approx(expected, abs=1e-12)
  assert dm.mutual_information(f0, f0) == pytest.approx(math.log(2), abs=1e-12)


def test_mutual_information_matches_sklearn_on_random_labels():
  rng = np.random.default_rng(3)
  a, b = rng.integers(0, 7, 500), rng.integers(0, 3, 500) * 10 + 4
  assert dm.mutual_information(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)


def test_roc_auc_by_hand_and_against_sklearn():
  # Positives score 0.9 and 0.4, negatives 0.4 and 0.1: of the four pairs the positive wins
  # three and ties one, so AUC = 3.5 / 4.
  assert dm.roc_auc([1, 1, 0, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
  rng = np.random.default_rng(8)
  positive, score = rng.random(300) < 0.3, np.round(rng.random(300), 2)
  assert dm.roc_auc(positive, score) == pytest.approx(roc_auc_score(positive, score), abs=1e-12)


def test_mig_of_two_factor_toy_by_hand():
  # code 0 = f0 (I = log 2 with f0, 0 with f1); code 1 = f0 AND f1 (I = i_and with each).
  # Gaps over H = log 2: f0 (log 2 - i_and) / log 2, f1 (i_and - 0) / log 2; mean 1/2.
  factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3)
  codes = np.stack([factors[:, 0], factors[:, 0] & factors[:, 1]], axis=1).astype(float)
  i_and = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
  gaps = [(math.log(2) - i_and) / math.log(2), i_and / math.log(2)]
  assert mig(codes, factors) == pytest.approx(np.mean(gaps), abs=1e-12)
  # Alone, code 1 leaves each factor a gap of i_and / log 2 (no second dimension).
  assert mig(codes[:, 1:], factors) == pytest.approx(i_and / math.log(2), abs=1e-12)


def _reference_dci(importance):
  """Eastwood & Williams from scipy's entropy, written independently of the library."""
  r = np.asarray(importance, np.float64)
  d = sum((1 - stats.entropy(row, base=r.shape[1])) * row.sum() / r.sum() for row in r)
  c = sum((1 - stats.entropy(col, base=r.shape[0])) * col.sum() / r.sum() for col in r.T)
  return d, c


@pytest.mark.parametrize("importance", [
    [[1.0, 0.0], [0.0, 1.0]],
    [[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]],
    [[0.3, 0.2, 0.1], [0.0, 0.4, 0.9]],
])
def test_dci_scores_match_the_entropy_formula(importance):
  np.testing.assert_allclose(dm.dci_scores(importance), _reference_dci(importance), atol=1e-12)


def test_dci_scores_of_a_split_factor_by_hand():
  # Factor 0 spread evenly over two of three dimensions: completeness 1 - log 2 / log 3 for
  # it, 1 for factor 1, each weighing half; every dimension serves one factor.
  disentanglement, completeness = dm.dci_scores([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  assert disentanglement == pytest.approx(1.0)
  assert completeness == pytest.approx(0.5 * (1 - math.log(2) / math.log(3)) + 0.5)
  assert dm.dci_scores(np.ones((3, 2))) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_modularity_by_hand():
  # Row 0 informs one factor (1); row 1 two equally (1 - (1 + 1 - 1) / (1 * 1) = 0);
  # row 2 nothing (0 by convention).
  assert dm.modularity(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])) == pytest.approx(1 / 3)
  # Three factors, squared information (4, 1, 1): 1 - (6 - 4) / (4 * 2) = 0.75.
  assert dm.modularity(np.array([[2.0, 1.0, 1.0]])) == pytest.approx(0.75)


# Known answers on codes built from the factors.

def test_copied_factors_score_near_one(toy):
  factors, copied, _, _ = toy
  assert mig(copied, factors) > 0.97
  scores = dci(copied, factors, num_trees=20)
  assert scores["disentanglement"] > 0.97 and scores["completeness"] > 0.97
  assert scores["informativeness"] > 0.97
  modularity_explicitness = dm.modularity_explicitness(copied, factors)
  assert modularity_explicitness["modularity"] > 0.97
  assert modularity_explicitness["explicitness"] > 0.97


def test_rotated_factors_score_low(toy):
  factors, _, rotated, _ = toy
  assert mig(rotated, factors) < 0.3
  scores = dci(rotated, factors, num_trees=20)
  assert scores["disentanglement"] < 0.4 and scores["completeness"] < 0.4
  assert scores["informativeness"] > 0.9  # the information is all there, only mixed
  assert dm.modularity_explicitness(rotated, factors)["modularity"] < 0.8


def test_duplicated_dimension_lowers_completeness_and_mig(toy):
  factors, copied, _, duplicated = toy
  assert dci(duplicated, factors, num_trees=20)["completeness"] < dci(copied, factors, num_trees=20)["completeness"] - 0.1
  assert mig(duplicated, factors) < 0.7  # factor 0 has no gap left


def test_sap_reaches_the_accuracy_gap_on_binary_factors():
  # For a binary factor the best dimension predicts it perfectly and any other scores the
  # balanced chance 1/2, so copied factors give SAP 1/2 and a rotation much less.
  rng = np.random.default_rng(1)
  factors = rng.integers(0, 2, (1000, 3))
  assert sap(_copied(rng, factors), factors) == pytest.approx(0.5, abs=0.05)
  assert sap(_rotated(factors), factors) < 0.25


def test_constant_factors_are_left_out_and_bad_input_fails():
  rng = np.random.default_rng(2)
  factors = _factors(rng, n=400)
  with_constant = np.concatenate([factors, np.zeros((400, 1), np.int64)], axis=1)
  codes = _copied(rng, factors)
  assert mig(codes, with_constant) == pytest.approx(mig(codes, factors))
  with pytest.raises(ValueError, match="same n"):
    mig(codes[:10], factors)
  with pytest.raises(ValueError, match="integer"):
    mig(codes, factors.astype(float))
  with pytest.raises(ValueError, match="nothing to disentangle"):
    sap(codes, np.zeros((400, 2), np.int64))


# FactorVAE and BetaVAE scores, with stored examples whose "observations" are the factors.

def _identity_sampler(rng, n=3000, levels=(4, 5, 3)):
  factors = _factors(rng, n, levels)
  return factor_sampling.StoredExamples(factors.astype(np.float64), factors)


def test_stored_examples_fix_the_requested_factor():
  rng = np.random.default_rng(4)
  sampler = _identity_sampler(rng)
  values = sampler.values(1, 50, rng)
  drawn = sampler.observations(1, values, rng)
  np.testing.assert_array_equal(drawn[:, 1], values)
  assert len(np.unique(drawn[:, 0])) > 1  # the other factors stay free
  with pytest.raises(ValueError, match="level"):
    sampler.observations(1, np.array([7]), rng)


def test_rendered_shapes_fix_the_requested_factor():
  # Brightness (factor 5) scales the whole image: the brightest pixel of every shape is its
  # brightness level (every scale covers whole pixels at 32 x 32).
  rng = np.random.default_rng(5)
  sampler = factor_sampling.RenderedShapes(resolution=32)
  values = np.array([0, 3, 1, 2, 0, 3])
  images = sampler.observations(5, values, rng)
  assert images.shape == (6, 32, 32, 1) and images.dtype == np.float32
  np.testing.assert_allclose(images.max(axis=(1, 2, 3)), shapes.BRIGHTNESSES[values], atol=1 / 255)


def _noisy(rng, mix=None):
  """Codes = the factors plus noise, optionally mixed by a matrix."""
  def represent(x):
    z = np.asarray(x, np.float64) + 0.05 * rng.normal(size=x.shape)
    return z if mix is None else z @ mix
  return represent


def test_factor_vae_score_is_one_for_copied_factors_and_lower_mixed():
  rng = np.random.default_rng(6)
  sampler = _identity_sampler(rng)
  represent = _noisy(rng)
  draw = lambda m: factor_sampling.fixed_factor_codes(sampler, represent, m, 32, rng)
  reference = factor_sampling.reference_codes(sampler, represent, 2000, rng)
  score = dm.factor_vae_score(draw(60), draw(40), reference)
  assert score["train_accuracy"] == 1.0 and score["eval_accuracy"] == 1.0
  assert score["num_active_dims"] == 3
  # Factors 0 and 1 summed into dimensions 0 and 1 alike: the votes cannot tell them apart.
  mixed = _noisy(rng, mix=np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
  draw_mixed = lambda m: factor_sampling.fixed_factor_codes(sampler, mixed, m, 32, rng)
  reference_mixed = factor_sampling.reference_codes(sampler, mixed, 2000, rng)
  assert dm.factor_vae_score(draw_mixed(60), draw_mixed(40), reference_mixed)["eval_accuracy"] < 0.8


def test_factor_vae_votes_by_hand():
  # Two dimensions; batches fixing factor 0 keep dimension 0 still, factor 1 dimension 1,
  # except one factor-1 batch where dimension 0 is stiller: train accuracy 3/4.
  still, moving = np.zeros((4, 1)), np.arange(4.0)[:, None]
  batches = np.stack([
      np.concatenate([still, moving], 1), np.concatenate([moving, still], 1),
      np.concatenate([moving, still], 1), np.concatenate([still, moving], 1),
  ])
  train = dm.FixedFactorCodes(np.array([0, 1, 1, 1]), batches)
  evaluation = dm.FixedFactorCodes(np.array([0, 1]), batches[:2])
  reference = np.random.default_rng(0).normal(size=(100, 2))
  score = dm.factor_vae_score(train, evaluation, reference)
  assert score["train_accuracy"] == pytest.approx(0.75) and score["eval_accuracy"] == 1.0
  pruned = dm.factor_vae_score(train, evaluation, reference * [1.0, 0.01])
  # Only dimension 0 votes: it stands for factor 1 (3 votes to 1); eval gets 1 of 2 right.
  assert pruned["num_active_dims"] == 1 and pruned["train_accuracy"] == pytest.approx(0.75)
  assert pruned["eval_accuracy"] == pytest.approx(0.5)


def test_beta_vae_score_separates_copied_from_uninformative_codes():
  rng = np.random.default_rng(7)
  sampler = _identity_sampler(rng)
  draw = lambda represent, m: factor_sampling.paired_codes(sampler, represent, m, 16, rng)
  copied = _noisy(rng)
  score = dm.beta_vae_score(draw(copied, 200), draw(copied, 100))
  assert score["eval_accuracy"] > 0.95
  noise = lambda x: rng.normal(size=(len(x), 3))
  assert dm.beta_vae_score(draw(noise, 200), draw(noise, 100))["eval_accuracy"] < 0.6


# The evaluator.

SCORES = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
          "modularity", "explicitness", "factor_vae", "beta_vae")


@pytest.mark.slow
def test_suite_scores_full_content_and_style_codes_of_grouped_shapes(tmp_path):
  config = configs.base_config()
  config.data.update(name="grouped_shapes", data_dir=str(tmp_path / "tfds"), num_examples=1200,
                     group_by="shape,scale", batch_size=64, num_groups=8, group_size=8)
  config.model.update(family="conv", hidden=32, activation="relu", content_dim=3, style_dim=2)
  config.evals = ml_collections.ConfigDict({"suite": configs.evaluator(
      "disentanglement_suite", max_examples=300, dci_trees=5, factor_vae_batch_size=16,
      factor_vae_train=30, factor_vae_eval=10, factor_vae_variance_examples=200,
      beta_vae_batch_size=8, beta_vae_train=30, beta_vae_eval=10)})
  setup = state.setup(config)
  metrics = evaluation.Evaluators(config, setup, tmp_path / "work").run(jax.device_get(setup.init().params))
  assert set(metrics) == {f"suite/{s}/{c}" for s in SCORES for c in ("full", "content", "style")}
  for key, value in metrics.items():
    assert 0.0 <= value <= 1.0, key


def test_suite_needs_factors(tmp_path):
  config = configs.base_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.evals = ml_collections.ConfigDict({"suite": configs.evaluator("disentanglement_suite")})
  with pytest.raises(SetupError, match="config.evals.suite: .*needs ground-truth factors"):
    evaluation.Evaluators(config, state.setup(config), tmp_path)
