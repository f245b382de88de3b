"""The content-group contrastive term against a float64 NumPy reference with explicit loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import configs, models, objectives
from mlvae_jax.objectives import contrast
from tests import reference, strategies


def reference_contrast(mu: np.ndarray, group_ids: np.ndarray, mask: np.ndarray,
                       temperature: float) -> float:
  """Khosla et al.'s L_out, one anchor and one positive at a time."""
  rows = np.nonzero(mask)[0]
  mu = mu.astype(np.float64)
  losses = []
  for i in rows:
    others = [a for a in rows if a != i]
    positives = [p for p in others if group_ids[p] == group_ids[i]]
    if not positives:
      continue
    logits = {a: -np.sum((mu[i] - mu[a]) ** 2) / temperature for a in others}
    top = max(logits.values())
    log_norm = top + np.log(sum(np.exp(v - top) for v in logits.values()))
    losses.append(-np.mean([logits[p] - log_norm for p in positives]))
  return float(np.mean(losses)) if losses else 0.0


def _score(mu, group_ids, mask, temperature=1.0) -> float:
  return float(contrast.content_group_contrast(jnp.asarray(mu), jnp.asarray(group_ids),
                                               jnp.asarray(mask), temperature))


@settings(max_examples=40, deadline=None)
@given(strategies.ragged_rows(min_rows=1, max_group_size=6, bound=3.0), st.sampled_from([0.1, 1.0, 10.0]))
def test_matches_reference_on_ragged_batches(batch, temperature):
  mu, group_ids, mask = batch
  np.testing.assert_allclose(_score(mu, group_ids, mask, temperature),
                             reference_contrast(mu, group_ids, mask, temperature),
                             rtol=1e-4, atol=1e-4)


def test_edge_cases():
  rng = np.random.default_rng(0)
  mu = rng.normal(size=(6, 2)).astype(np.float32)
  mask = np.ones(6, bool)
  # every group of one: no anchor, the term is 0
  assert _score(mu, np.arange(6, dtype=np.int32), mask) == 0.0
  # one group spanning the batch: every other row is a positive and there is no negative
  one_group = np.zeros(6, np.int32)
  np.testing.assert_allclose(_score(mu, one_group, mask),
                             reference_contrast(mu, one_group, mask, 1.0), rtol=1e-5)
  # all padding: 0, not NaN
  assert _score(mu, one_group, np.zeros(6, bool)) == 0.0
  # codes far apart (extreme values): finite and still the reference
  far = (mu * 1e3).astype(np.float32)
  ids = np.array([0, 0, 1, 1, 2, 2], np.int32)
  np.testing.assert_allclose(_score(far, ids, mask, 1e6),
                             reference_contrast(far, ids, mask, 1e6), rtol=1e-3)


def test_known_answers_identical_independent_and_group_coded_content():
  """Identical codes score exactly log(others); codes independent of the group score as they
  do under shuffled labels; codes that place each group at its own point reach the floor of
  L_out, log(group-mates), every group-mate then taking an equal share of the softmax."""
  rng = np.random.default_rng(1)
  group_ids = np.repeat(np.arange(16), 8).astype(np.int32)
  mask = np.ones(128, bool)
  np.testing.assert_allclose(_score(np.ones((128, 4), np.float32), group_ids, mask), np.log(127),
                             rtol=1e-5)
  noise = rng.normal(size=(128, 4)).astype(np.float32)
  shuffled = [_score(noise, rng.permutation(group_ids), mask) for _ in range(20)]
  assert abs(_score(noise, group_ids, mask) - np.mean(shuffled)) < 4 * np.std(shuffled) + 0.05
  centres = rng.normal(size=(16, 4)) * 10.0
  coded = _score((centres[group_ids] + 0.1 * rng.normal(size=(128, 4))).astype(np.float32),
                 group_ids, mask)
  np.testing.assert_allclose(coded, np.log(7), atol=1e-3)
  assert min(shuffled) > np.log(7) + 1.0


def test_gradient_is_finite_with_rows_that_have_no_other_row():
  mu = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)), jnp.float32)
  mask = jnp.array([True, False, False, False])
  grad = jax.grad(contrast.content_group_contrast)(mu, jnp.zeros(4, jnp.int32), mask)
  assert np.all(np.asarray(grad) == 0.0)
  grad = jax.grad(contrast.content_group_contrast)(mu, jnp.array([0, 0, 1, 2]), jnp.ones(4, bool))
  assert np.all(np.isfinite(np.asarray(grad))) and np.any(np.asarray(grad) != 0.0)


def test_the_loss_adds_the_weighted_term_to_the_paper_objective():
  rng = np.random.default_rng(3)
  ids, mask = reference.random_ragged_ids(rng, 12, 4)
  post = models.Posterior(*(jnp.asarray(rng.normal(size=(12, d)), jnp.float32) for d in (3, 3, 2, 2)))
  batch = {"x": jnp.asarray(rng.uniform(size=(12, 5)), jnp.float32), "group_ids": jnp.asarray(ids),
           "mask": jnp.asarray(mask)}
  weight = jnp.asarray(rng.normal(size=(5, 5)), jnp.float32)

  def decode(c, s):
    return models.Likelihood(jnp.concatenate([c, s], -1) @ weight)

  noise = objectives.sample_noise(jax.random.PRNGKey(0), 12, 4, 3, 2, "group")
  config = configs.base_config().objective
  paper, paper_metrics = objectives.group_elbo(post, decode, batch, noise, 4, config)
  assert "content_contrast" not in paper_metrics
  config.content_contrast_weight, config.content_contrast_temperature = 7.0, 0.5
  loss, metrics = objectives.add_terms(paper, paper_metrics, objectives.TermInputs(
      post, batch, batch["group_ids"], 4), config)
  expected = reference_contrast(np.asarray(post.content_mu), ids, mask, 0.5)
  np.testing.assert_allclose(float(metrics["content_contrast"]), expected, rtol=1e-4)
  np.testing.assert_allclose(float(loss), float(paper) + 7.0 * expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["elbo"]), float(paper_metrics["elbo"]), rtol=1e-6)


@pytest.mark.parametrize("weight, temperature", [(-1.0, 1.0), (1.0, 0.0)])
def test_bad_settings_are_named(weight, temperature):
  config = configs.base_config().objective
  config.content_contrast_weight, config.content_contrast_temperature = weight, temperature
  with pytest.raises(ValueError, match="content_contrast_weight is .* temperature > 0"):
    objectives.check_objective_config(config)
