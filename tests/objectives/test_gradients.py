"""Gradient values of evidence pooling and of the group ELBO against central finite
differences of the independent float64 reference (tests/reference.py), in float64.

Forward checks cannot see a `stop_gradient`: detaching the precision weights of the pooled
mean, or the sampled content, leaves every value unchanged and only the gradients wrong (the
content encoder then learns through the KL alone). The batch is ragged: groups of 3, 2 and 3
members, an empty slot, and padding rows holding values unlike any real row.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, groups, models, objectives
from tests import reference

# Float64 central differences with a relative step of 1e-6: truncation error ~1e-12 and
# rounding ~1e-16 * |f| / 1e-6 <= 1e-8 for the |f| < 100 here, far below the O(0.1) change
# a detached path makes to a gradient.
STEP = 1e-6
RTOL, ATOL = 1e-6, 1e-6

GROUP_IDS = np.array([0, 0, 0, 1, 1, 3, 3, 3, 4, 4], np.int32)  # slot 2 empty, 2 padding rows
NUM_GROUPS = 4
MASK = GROUP_IDS < NUM_GROUPS
N = len(GROUP_IDS)
CONTENT_DIM, STYLE_DIM, HIDDEN, PIXELS = 2, 2, 3, 4
BETA_CONTENT, BETA_STYLE = 1.5, 0.5  # unequal, so a gradient routed to the wrong KL shows

Arrays = dict[str, np.ndarray]


def central_differences(f: Callable[..., float], arrays: Arrays) -> Arrays:
  """d f / d every entry of every array of `f(**arrays)`."""
  grads = {}
  for name, array in arrays.items():
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
      h = STEP * max(1.0, abs(array[index]))
      values = []
      for sign in (1, -1):
        shifted = array.copy()
        shifted[index] += sign * h
        values.append(f(**{**arrays, name: shifted}))
      grad[index] = (values[0] - values[1]) / (2 * h)
    grads[name] = grad
  return grads


def assert_gradients_close(actual: Arrays, expected: Arrays) -> None:
  for name, value in expected.items():
    assert actual[name].dtype == np.float64, f"{name} was not differentiated in float64"
    np.testing.assert_allclose(actual[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def _posterior(rng: np.random.Generator, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Member (mu, logvar) with precisions a factor e^6 apart; padding rows hold 3 and 4."""
  mu = rng.normal(size=(N, dim))
  logvar = rng.uniform(-3, 3, size=(N, dim))
  mu[~MASK], logvar[~MASK] = 3.0, 4.0
  return mu, logvar


POOLINGS = {
    "product": (groups.accumulate_evidence, reference.product_of_normals),
    "average": (groups.average_evidence, reference.average_of_normals),
}


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooled_posterior_gradients_match_finite_differences(pooling):
  pool, reference_pool = POOLINGS[pooling]
  rng = np.random.default_rng(0)
  mu, logvar = _posterior(rng, 3)
  # A random linear read-out of (group_mu, group_logvar): its gradient is the vector-Jacobian
  # product with random cotangents, so every output row and dimension counts.
  mu_weights, logvar_weights = rng.normal(size=(2, NUM_GROUPS, 3))

  def reference_readout(mu, logvar):
    total = 0.0
    for slot in range(NUM_GROUPS):
      members = (GROUP_IDS == slot) & MASK
      if members.any():
        group_mu, group_logvar = reference_pool(mu[members], logvar[members])
        total += mu_weights[slot] @ group_mu + logvar_weights[slot] @ group_logvar
    return total

  with jax.enable_x64(True):
    def readout(mu, logvar):
      group_mu, group_logvar = pool(mu, logvar, jnp.asarray(GROUP_IDS), NUM_GROUPS, jnp.asarray(MASK))
      return jnp.sum(mu_weights * group_mu + logvar_weights * group_logvar)

    grad_mu, grad_logvar = jax.jit(jax.grad(readout, argnums=(0, 1)))(mu, logvar)
  expected = central_differences(reference_readout, {"mu": mu, "logvar": logvar})
  actual = {"mu": np.asarray(grad_mu), "logvar": np.asarray(grad_logvar)}
  assert_gradients_close(actual, expected)
  assert not actual["mu"][~MASK].any() and not actual["logvar"][~MASK].any()  # exactly 0


def _decoder_params(rng: np.random.Generator, likelihood: str) -> Arrays:
  params = {
      "w1": rng.normal(size=(CONTENT_DIM + STYLE_DIM, HIDDEN)),
      "b1": rng.normal(size=HIDDEN) * 0.1,
      "w2": rng.normal(size=(HIDDEN, PIXELS)),
      "b2": rng.normal(size=PIXELS) * 0.1,
  }
  if likelihood == "gaussian":
    params["obs_logvar"] = rng.uniform(-1, 1, size=PIXELS)
  return params


def _decoder_loc(params: Arrays, z, xp):
  """The tiny decoder's output (logits or mean) with numpy or jax.numpy as `xp`."""
  return xp.tanh(z @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def _group_problem(seed: int, likelihood: str, variant: str, content_sample: str):
  """Posterior and decoder parameters, data, noise and the reference loss of one case."""
  rng = np.random.default_rng(seed)
  content_mu, content_logvar = _posterior(rng, CONTENT_DIM)
  style_mu, style_logvar = _posterior(rng, STYLE_DIM)
  posterior = dict(content_mu=content_mu, content_logvar=content_logvar, style_mu=style_mu,
                   style_logvar=style_logvar)
  decoder = _decoder_params(rng, likelihood)
  x = rng.uniform(size=(N, PIXELS)) if likelihood == "bernoulli" else rng.normal(size=(N, PIXELS))
  slots = N if variant == "vae" else NUM_GROUPS
  noise = objectives.Noise(rng.normal(size=(slots if content_sample == "group" else N, CONTENT_DIM)),
                           rng.normal(size=(N, STYLE_DIM)))
  ids, num_groups = (np.where(MASK, np.arange(N), N), N) if variant == "vae" else (GROUP_IDS, NUM_GROUPS)

  def reference_loss(**arrays):
    decoder_arrays = {k: arrays[k] for k in decoder}

    def log_prob(c, s, x_i):
      loc = _decoder_loc(decoder_arrays, np.concatenate([c, s]), np)
      if likelihood == "bernoulli":
        return reference.bernoulli_log_prob(loc, x_i)
      return reference.gaussian_log_prob(loc, decoder_arrays["obs_logvar"], x_i)

    terms = reference.group_elbo(
        *(arrays[k] for k in posterior), x, ids, MASK, num_groups, log_prob, noise.content,
        noise.style, content_sample=content_sample, variant=variant)
    return -(terms["reconstruction"] - BETA_STYLE * terms["kl_style"]
             - BETA_CONTENT * terms["kl_content"])

  return posterior, decoder, x, noise, reference_loss


@pytest.mark.parametrize("content_sample", objectives.CONTENT_SAMPLES)
@pytest.mark.parametrize("variant", objectives.VARIANTS)
@pytest.mark.parametrize("likelihood", models.LIKELIHOODS)
def test_group_elbo_gradients_match_finite_differences(likelihood, variant, content_sample):
  seed = 10 * models.LIKELIHOODS.index(likelihood) + objectives.VARIANTS.index(variant)
  posterior, decoder, x, noise, reference_loss = _group_problem(seed, likelihood, variant,
                                                                content_sample)
  config = configs.base_config().objective
  config.update(variant=variant, content_sample=content_sample, beta_content=BETA_CONTENT,
                beta_style=BETA_STYLE)

  with jax.enable_x64(True):
    batch = {"x": jnp.asarray(x), "group_ids": jnp.asarray(GROUP_IDS), "mask": jnp.asarray(MASK)}

    def loss(posterior_arrays, decoder_arrays):
      def decode(content, style):
        loc = _decoder_loc(decoder_arrays, jnp.concatenate([content, style], -1), jnp)
        if likelihood == "bernoulli":
          return models.Likelihood(loc)
        return models.Likelihood(loc, jnp.broadcast_to(decoder_arrays["obs_logvar"], loc.shape))

      return objectives.group_elbo(models.Posterior(**posterior_arrays), decode, batch, noise,
                                   NUM_GROUPS, config)[0]

    value, (grad_posterior, grad_decoder) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
        posterior, decoder)
  arrays = {**posterior, **decoder}
  np.testing.assert_allclose(value, reference_loss(**arrays), rtol=1e-12)
  actual = {k: np.asarray(v) for k, v in {**grad_posterior, **grad_decoder}.items()}
  assert_gradients_close(actual, central_differences(reference_loss, arrays))
