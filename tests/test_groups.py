"""Evidence accumulation and batch validation against the float64 reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import groups
from tests import reference

LOGVAR_RANGE = 30.0


def _check_against_reference(seed, n, g, d, logvar_scale, combine, reference_combine):
  rng = np.random.default_rng(seed)
  ids, mask = reference.random_ragged_ids(rng, n, g)
  mu = rng.normal(size=(n, d)) * 3
  logvar = rng.uniform(-logvar_scale, logvar_scale, size=(n, d))
  group_mu, group_logvar = jax.jit(combine, static_argnums=3)(
      jnp.float32(mu), jnp.float32(logvar), jnp.asarray(ids), g, jnp.asarray(mask)
  )
  for slot in range(g):
    members = np.nonzero(ids == slot)[0]
    if members.size == 0:
      np.testing.assert_array_equal(group_mu[slot], 0.0)
      np.testing.assert_array_equal(group_logvar[slot], 0.0)
      continue
    ref_mu, ref_logvar = reference_combine(mu[members], logvar[members])
    np.testing.assert_allclose(group_logvar[slot], ref_logvar, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(group_mu[slot], ref_mu, rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 24),
    g=st.integers(1, 8),
    d=st.integers(1, 4),
    logvar_scale=st.sampled_from([1.0, 10.0, LOGVAR_RANGE]),
)
def test_accumulate_evidence_matches_product_of_normals(seed, n, g, d, logvar_scale):
  _check_against_reference(
      seed, n, g, d, logvar_scale, groups.accumulate_evidence, reference.product_of_normals
  )


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 24), g=st.integers(1, 8))
def test_average_evidence_matches_mean_of_normals(seed, n, g):
  _check_against_reference(
      seed, n, g, 3, 10.0, groups.average_evidence, reference.average_of_normals
  )


def test_group_of_one_is_the_member_itself():
  mu = jnp.array([[0.3, -2.0]])
  logvar = jnp.array([[-30.0, 30.0]])
  group_mu, group_logvar = groups.accumulate_evidence(mu, logvar, jnp.array([0]), 1, jnp.array([True]))
  np.testing.assert_allclose(group_mu, mu, rtol=1e-6)
  np.testing.assert_allclose(group_logvar, logvar, rtol=1e-6)


def test_identical_members_divide_the_variance_by_group_size():
  """Evidence accumulates: k copies of N(m, v) give N(m, v / k), not the harmonic-mean 2x error."""
  k = 5
  mu = jnp.full((k, 3), 1.5)
  logvar = jnp.full((k, 3), 0.7)
  group_mu, group_logvar = groups.accumulate_evidence(
      mu, logvar, jnp.zeros(k, jnp.int32), 1, jnp.ones(k, bool)
  )
  np.testing.assert_allclose(group_mu, 1.5, rtol=1e-6)
  np.testing.assert_allclose(group_logvar, 0.7 - np.log(k), rtol=1e-6)


def test_one_group_spanning_the_batch():
  rng = np.random.default_rng(0)
  mu, logvar = rng.normal(size=(16, 4)), rng.uniform(-5, 5, size=(16, 4))
  group_mu, group_logvar = groups.accumulate_evidence(
      jnp.float32(mu), jnp.float32(logvar), jnp.zeros(16, jnp.int32), 1, jnp.ones(16, bool)
  )
  ref_mu, ref_logvar = reference.product_of_normals(mu, logvar)
  np.testing.assert_allclose(group_mu[0], ref_mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(group_logvar[0], ref_logvar, rtol=1e-5, atol=1e-5)


def test_padding_rows_change_nothing():
  rng = np.random.default_rng(1)
  ids = jnp.array([0, 0, 1, 2, 2, 2], jnp.int32)
  mu, logvar = jnp.float32(rng.normal(size=(6, 3))), jnp.float32(rng.normal(size=(6, 3)))
  mask = jnp.ones(6, bool)
  unpadded = groups.accumulate_evidence(mu, logvar, ids, 3, mask)
  padded_ids = jnp.concatenate([ids, jnp.full(4, 3, jnp.int32)])
  garbage = jnp.float32(rng.normal(size=(4, 3)) * 1e4)
  padded = groups.accumulate_evidence(
      jnp.concatenate([mu, garbage]), jnp.concatenate([logvar, garbage]), padded_ids, 3,
      jnp.concatenate([mask, jnp.zeros(4, bool)]),
  )
  chex.assert_trees_all_close(unpadded, padded, rtol=1e-6)


@pytest.mark.parametrize("logvar_value", [-30.0, 0.0, 30.0])
def test_gradients_are_each_members_precision_share(logvar_value):
  """With w_i = exp(-logvar_i) / sum_j exp(-logvar_j), member i's share of its group's
  precision: d mu_G / d mu_i = w_i, d logvar_G / d logvar_i = w_i and
  d mu_G / d logvar_i = w_i (mu_G - mu_i); exact in float32 at the edges of the range."""
  ids = np.array([0, 0, 0, 1, 2, 2])
  mask = np.array([True, True, True, True, True, False])
  mu = np.linspace(-1, 1, 12).reshape(6, 2)
  logvar = logvar_value + np.linspace(0, 3, 12).reshape(6, 2)
  rng = np.random.default_rng(0)
  mu_weights, logvar_weights = rng.normal(size=(2, 3, 2))

  def readout(mu, logvar):
    group_mu, group_logvar = groups.accumulate_evidence(mu, logvar, jnp.asarray(ids), 3, jnp.asarray(mask))
    return jnp.sum(mu_weights * group_mu + logvar_weights * group_logvar)

  grad_mu, grad_logvar = jax.grad(readout, argnums=(0, 1))(jnp.float32(mu), jnp.float32(logvar))
  expected_mu, expected_logvar = np.zeros_like(mu), np.zeros_like(logvar)
  for slot in range(3):
    members = np.nonzero((ids == slot) & mask)[0]
    precision = np.exp(-(logvar[members] - logvar[members].min(0)))  # shifted: no overflow
    share = precision / precision.sum(0)
    group_mu, _ = reference.product_of_normals(mu[members], logvar[members])
    expected_mu[members] = mu_weights[slot] * share
    expected_logvar[members] = share * (mu_weights[slot] * (group_mu - mu[members]) + logvar_weights[slot])
  np.testing.assert_allclose(grad_mu, expected_mu, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_logvar, expected_logvar, rtol=1e-5, atol=1e-6)
  assert not np.asarray(grad_mu)[5].any() and not np.asarray(grad_logvar)[5].any()  # padding


def test_empty_group_slots_get_the_prior_and_exact_gradients():
  ids = jnp.array([0, 0, 3, 3], jnp.int32)  # slots 1 and 2 empty
  mask = jnp.ones(4, bool)

  def objective(logvar):
    return jnp.sum(groups.accumulate_evidence(jnp.ones((4, 2)), logvar, ids, 4, mask)[1])

  value, grad = jax.value_and_grad(objective)(jnp.zeros((4, 2)))
  np.testing.assert_allclose(value, 2 * 2 * -np.log(2), rtol=1e-6)  # two pairs, empty slots 0
  np.testing.assert_allclose(grad, 0.5, rtol=1e-6)  # each member holds half its pair's precision


def _good_batch():
  return {
      "x": np.zeros((6, 2), np.float32),
      "group_ids": np.array([0, 0, 1, 2, 3, 3], np.int32),
      "mask": np.array([True, True, True, True, False, False]),
  }


def test_validate_batch_accepts_a_good_batch():
  groups.validate_batch(_good_batch(), num_groups=3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(group_ids=np.array([0, 1, 0, 2, 3, 3], np.int32)), "not sorted"),
        (lambda b: b.update(group_ids=np.array([0, 0, 1, 5, 5, 5], np.int32)), "outside"),
        (lambda b: b.update(group_ids=np.array([-1, 0, 1, 2, 3, 3], np.int32)), "outside"),
        (lambda b: b.update(mask=np.array([True] * 4 + [True, False])), "outside"),
        (lambda b: b.update(group_ids=np.array([0, 0, 1, 2, 2, 3], np.int32)), "padding rows"),
        (lambda b: b.update(mask=np.ones(5, bool)), "shape mismatch"),
        (lambda b: b.update(group_ids=np.zeros((6, 1), np.int32)), "shape mismatch"),
        (lambda b: b.update(mask=np.ones(6, np.int32)), "must be bool"),
        (lambda b: b.update(group_ids=np.zeros(6, np.float32)), "integers"),
        (lambda b: b.pop("mask"), "no 'mask'"),
        (lambda b: b.update(labels=np.zeros(3)), "'labels' has shape"),
    ],
)
def test_validate_batch_rejects_bad_batches(change, message):
  batch = _good_batch()
  change(batch)
  with pytest.raises(groups.BatchError, match=message):
    groups.validate_batch(batch, num_groups=3)


def test_validate_batch_names_the_offending_rows():
  batch = _good_batch()
  batch["group_ids"] = np.array([0, 0, 2, 1, 3, 3], np.int32)
  with pytest.raises(groups.BatchError, match=r"rows \[3\]"):
    groups.validate_batch(batch, num_groups=3)
