"""Ada-GVAE and Ada-ML-VAE (objectives/adaptive.py) against the float64 reference: the shared
dimensions, the group ELBO's value and its gradients, on ragged groups with padding, groups of
one, one group spanning the batch and extreme log-variances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, models, objectives
from mlvae_jax.objectives import adaptive
from tests import reference
from tests.objectives.test_gradients import assert_gradients_close, central_differences

ADAPTIVE = adaptive.ADAPTIVE_VARIANTS
# Groups of 3, 1, 2 and 1 members, an empty slot, then two padding rows.
GROUP_IDS = np.array([0, 0, 0, 1, 3, 3, 4, 5, 5], np.int32)
NUM_GROUPS = 5
MASK = GROUP_IDS < NUM_GROUPS
CONTENT_DIM, STYLE_DIM, PIXELS = 4, 2, 3


def _shared(mu, logvar, ids, mask, num_groups):
  return np.asarray(adaptive.shared_dimensions(adaptive.group_divergence(
      jnp.asarray(mu), jnp.asarray(logvar), jnp.asarray(ids), num_groups, jnp.asarray(mask))))


def test_a_pair_shares_the_dimensions_below_the_papers_threshold():
  """Two members alike in dimensions 0 and 1, far apart in 2 and 3: the pair shares 0 and 1;
  the divergence is the symmetrised per-dimension KL between the two posteriors."""
  mu = np.array([[0.1, -0.3, 2.0, -1.5], [0.12, -0.31, -1.5, 2.1]], np.float32)
  logvar = np.array([[-1.0, 0.0, -2.0, -1.0], [-1.1, 0.05, -1.0, -2.0]], np.float32)
  ids, mask = np.zeros(2, np.int32), np.ones(2, bool)
  np.testing.assert_array_equal(_shared(mu, logvar, ids, mask, 1)[0], [True, True, False, False])
  divergence = adaptive.group_divergence(jnp.asarray(mu), jnp.asarray(logvar), jnp.asarray(ids), 1,
                                         jnp.asarray(mask))
  m, lv = np.float64(mu), np.float64(logvar)
  expected = 0.5 * (reference.kl_per_dim(m[0], lv[0], m[1], lv[1])
                    + reference.kl_per_dim(m[1], lv[1], m[0], lv[0]))
  np.testing.assert_allclose(divergence[0], expected, rtol=1e-5, atol=1e-6)  # float32


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("logvar_scale", [2.0, 30.0])
def test_shared_dimensions_match_the_reference_on_ragged_groups(seed, logvar_scale):
  rng = np.random.default_rng(seed)
  n, g = 24, 7
  ids, mask = reference.random_ragged_ids(rng, n, g)
  mu = rng.normal(size=(n, CONTENT_DIM)) * 2
  logvar = rng.uniform(-logvar_scale, logvar_scale, (n, CONTENT_DIM))
  mu[~mask], logvar[~mask] = 5.0, 9.0  # padding rows unlike any member
  shared = _shared(np.float32(mu), np.float32(logvar), ids, mask, g)
  for slot in range(g):
    members = (ids == slot) & mask
    if members.any():
      expected = reference.adaptive_shared(mu[members], logvar[members])
      np.testing.assert_array_equal(shared[slot], expected, err_msg=f"slot {slot}")
  assert np.isfinite(np.asarray(adaptive.group_divergence(
      jnp.float32(mu), jnp.float32(logvar), jnp.asarray(ids), g, jnp.asarray(mask)))).all()


def _problem(seed, ids, num_groups, logvar_scale=2.0):
  rng = np.random.default_rng(seed)
  n = len(ids)
  mask = ids < num_groups
  posterior = dict(content_mu=rng.normal(size=(n, CONTENT_DIM)),
                   content_logvar=rng.uniform(-logvar_scale, logvar_scale, (n, CONTENT_DIM)),
                   style_mu=rng.normal(size=(n, STYLE_DIM)),
                   style_logvar=rng.uniform(-logvar_scale, logvar_scale, (n, STYLE_DIM)))
  for value in posterior.values():
    value[~mask] = 3.0
  weight = rng.normal(size=(CONTENT_DIM + STYLE_DIM, PIXELS)) * 0.5
  x = rng.uniform(size=(n, PIXELS))
  return posterior, weight, x, mask, rng


def _jax_and_reference(variant, content_sample, ids, num_groups, seed=0, logvar_scale=2.0):
  """(loss of group_elbo in float64 JAX, value and gradients; the reference's loss function,
  arrays) for one ragged batch with a linear Bernoulli decoder."""
  posterior, weight, x, mask, rng = _problem(seed, ids, num_groups, logvar_scale)
  n = len(ids)
  content_noise = rng.normal(size=(num_groups if content_sample == "group" else n, CONTENT_DIM))
  style_noise = rng.normal(size=(n, STYLE_DIM))
  config = configs.base_config().objective
  config.update(variant=variant, content_sample=content_sample, beta_content=1.5, beta_style=0.5)

  def reference_loss(**arrays):
    terms = reference.group_elbo(
        arrays["content_mu"], arrays["content_logvar"], arrays["style_mu"], arrays["style_logvar"],
        x, ids, mask, num_groups,
        lambda c, s, x_i: reference.bernoulli_log_prob(np.concatenate([c, s]) @ weight, x_i),
        content_noise, style_noise, content_sample=content_sample, variant=variant)
    return -(terms["reconstruction"] - 0.5 * terms["kl_style"] - 1.5 * terms["kl_content"])

  with jax.enable_x64(True):
    batch = {"x": jnp.asarray(x), "group_ids": jnp.asarray(ids), "mask": jnp.asarray(mask)}
    noise = objectives.Noise(jnp.asarray(content_noise), jnp.asarray(style_noise))
    decode = lambda c, s: models.Likelihood(jnp.concatenate([c, s], -1) @ weight)

    def loss(arrays):
      return objectives.group_elbo(models.Posterior(**arrays), decode, batch, noise, num_groups,
                                   config)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(posterior)
  return value, {k: np.asarray(v) for k, v in grads.items()}, reference_loss, posterior


@pytest.mark.parametrize("content_sample", objectives.CONTENT_SAMPLES)
@pytest.mark.parametrize("variant", ADAPTIVE)
def test_value_and_gradients_match_the_reference(variant, content_sample):
  value, grads, reference_loss, arrays = _jax_and_reference(variant, content_sample, GROUP_IDS,
                                                            NUM_GROUPS)
  np.testing.assert_allclose(value, reference_loss(**arrays), rtol=1e-12)
  assert_gradients_close(grads, central_differences(reference_loss, arrays))
  for name, grad in grads.items():
    assert not grad[~MASK].any(), name  # padding rows get exactly no gradient


@pytest.mark.parametrize("variant", ADAPTIVE)
def test_one_group_spanning_the_batch_with_extreme_log_variances(variant):
  ids = np.zeros(6, np.int32)
  value, grads, reference_loss, arrays = _jax_and_reference(variant, "group", ids, 1, seed=3,
                                                            logvar_scale=12.0)
  np.testing.assert_allclose(value, reference_loss(**arrays), rtol=1e-10)
  assert all(np.isfinite(g).all() for g in grads.values())


@pytest.mark.parametrize("variant, pooled_twin", [("ada_gvae", "gvae"), ("ada_mlvae", "mlvae")])
def test_groups_of_one_are_their_pooled_twin(variant, pooled_twin):
  """A member alone shares every dimension with itself: the adaptive ELBO is its twin's."""
  ids = np.array([0, 1, 2, 3, 4, 4], np.int32)  # five groups of one, one padding row
  ada, ada_grads, _, _ = _jax_and_reference(variant, "group", ids, 4)
  twin, twin_grads, _, _ = _jax_and_reference(pooled_twin, "group", ids, 4)
  np.testing.assert_allclose(ada, twin, rtol=1e-12)
  for name in ada_grads:
    np.testing.assert_allclose(ada_grads[name], twin_grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant, pooled_twin", [("ada_gvae", "gvae"), ("ada_mlvae", "mlvae")])
def test_the_training_loss_takes_the_variants(variant, pooled_twin):
  """`objective.variant=ada_*` passes the loss's checks and trains a real model: finite loss
  and gradients, different from the variant that pools every dimension."""
  losses = {}
  for name in (variant, pooled_twin):
    config = configs.base_config()
    config.model.update(hidden=16, content_dim=CONTENT_DIM, style_dim=STYLE_DIM)
    config.objective.variant = name
    config.data.update(batch_size=len(GROUP_IDS), num_groups=NUM_GROUPS)
    model = models.build_model(config.model, (4, 4, 1))
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
    batch = {"x": jnp.float32(np.random.default_rng(0).uniform(size=(len(GROUP_IDS), 4, 4, 1))),
             "group_ids": jnp.asarray(GROUP_IDS), "mask": jnp.asarray(MASK)}
    loss_fn = objectives.make_loss_fn(model, config)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, jax.random.key(1),
                                                                  jnp.int32(0))
    assert np.isfinite(loss) and all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    losses[name] = float(loss)
  assert losses[variant] != losses[pooled_twin]
