"""Model families, likelihoods and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, groups, models
from tests import reference


def _config(**model_fields):
  config = configs.base_config().model
  config.update(model_fields)
  return config


@pytest.mark.parametrize(
    "family, shape, hidden",
    [("mlp", (28, 28, 1), 500), ("conv", (32, 32, 1), 256), ("conv", (64, 64, 3), 256)],
)
def test_encode_decode_shapes(family, shape, hidden):
  model = models.build_model(_config(family=family, hidden=hidden, content_dim=10, style_dim=6), shape)
  x = jnp.zeros((3, *shape))
  params = model.init(jax.random.key(0), x)["params"]
  posterior = model.apply({"params": params}, x, method="encode")
  assert posterior.content_mu.shape == posterior.content_logvar.shape == (3, 10)
  assert posterior.style_mu.shape == posterior.style_logvar.shape == (3, 6)
  out = model.apply({"params": params}, posterior.content_mu, posterior.style_mu, method="decode")
  assert out.loc.shape == (3, *shape) and out.logvar is None


def test_paper_mnist_mlp_has_the_paper_sizes():
  model = models.build_model(_config(), (28, 28, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  shapes = jax.tree.map(jnp.shape, params)
  assert shapes["encoder"]["Dense_0"]["kernel"] == (784, 500)
  assert shapes["encoder"]["_NormalHeads_0"]["content"]["kernel"] == (500, 20)
  assert shapes["decoder"]["Dense_0"]["kernel"] == (20, 500)
  assert shapes["decoder"]["Dense_1"]["kernel"] == (500, 784)


def test_deeper_mlp_stacks_hidden_layers_of_one_width():
  model = models.build_model(_config(hidden=64, hidden_layers=3), (28, 28, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  shapes = jax.tree.map(jnp.shape, params)
  assert [shapes["encoder"][f"Dense_{i}"]["kernel"] for i in range(3)] == [(784, 64), (64, 64), (64, 64)]
  assert [shapes["decoder"][f"Dense_{i}"]["kernel"] for i in range(4)] == [
      (20, 64), (64, 64), (64, 64), (64, 784)]
  x = jnp.ones((2, 28, 28, 1))
  assert model.apply({"params": params}, x).loc.shape == (2, 28, 28, 1)


@pytest.mark.parametrize("family, shape", [("mlp", (28, 28, 1)), ("conv", (32, 32, 1))])
def test_shared_content_variance_is_one_learned_vector(family, shape):
  """Every input gets the same content log-variance (a parameter, so it trains); the content
  mean and the style posterior stay per input; the group product is the mean of the means."""
  model = models.build_model(_config(family=family, content_dim=5, style_dim=3,
                                     content_variance="shared"), shape)
  x = jnp.float32(np.random.default_rng(0).uniform(size=(6, *shape)))
  params = model.init(jax.random.key(0), x)["params"]
  heads = params["encoder"]["_NormalHeads_0"]
  assert heads["content"]["kernel"].shape[1] == 5 and heads["content_logvar"].shape == (5,)
  heads["content_logvar"] = jnp.float32([-2.0, -1.0, 0.0, 1.0, 2.0])
  posterior = model.apply({"params": params}, x, method="encode")
  np.testing.assert_array_equal(posterior.content_logvar,
                                np.broadcast_to([-2.0, -1.0, 0.0, 1.0, 2.0], (6, 5)))
  assert np.std(np.asarray(posterior.content_mu), axis=0).min() > 0
  assert np.std(np.asarray(posterior.style_logvar), axis=0).min() > 0
  mu, logvar = groups.accumulate_evidence(posterior.content_mu, posterior.content_logvar,
                                          jnp.int32([0, 0, 0, 1, 1, 2]), 3, jnp.ones(6, bool))
  np.testing.assert_allclose(mu[0], np.mean(np.asarray(posterior.content_mu)[:3], axis=0), rtol=1e-5)
  np.testing.assert_allclose(logvar[0], np.float32([-2.0, -1.0, 0.0, 1.0, 2.0]) - np.log(3), rtol=1e-5)


def test_isotropic_content_variance_is_one_learned_number():
  model = models.build_model(_config(content_dim=5, style_dim=3, content_variance="isotropic"),
                             (8, 8, 1))
  x = jnp.float32(np.random.default_rng(0).uniform(size=(4, 8, 8, 1)))
  params = model.init(jax.random.key(0), x)["params"]
  params["encoder"]["_NormalHeads_0"]["content_logvar"] = jnp.float32([-1.5])
  posterior = model.apply({"params": params}, x, method="encode")
  np.testing.assert_array_equal(posterior.content_logvar, np.full((4, 5), -1.5, np.float32))


def test_gaussian_learned_and_fixed_logvar():
  learned = models.build_model(_config(likelihood="gaussian"), (4,))
  params = learned.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  assert params["obs_logvar"].shape == (4,)
  fixed = models.build_model(_config(likelihood="gaussian", gaussian_logvar="-2.5"), (4,))
  fixed_params = fixed.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
  assert "obs_logvar" not in fixed_params
  out = fixed.apply({"params": fixed_params}, jnp.zeros((2, 10)), jnp.zeros((2, 10)), method="decode")
  np.testing.assert_array_equal(out.logvar, -2.5)


def test_log_likelihoods_match_reference():
  rng = np.random.default_rng(0)
  loc, logvar, x = rng.normal(size=7), rng.normal(size=7), rng.uniform(size=7)
  np.testing.assert_allclose(
      models.log_likelihood(models.Likelihood(jnp.float32(loc)), jnp.float32(x)),
      reference.bernoulli_log_prob(loc, x), rtol=1e-5,
  )
  np.testing.assert_allclose(
      models.log_likelihood(models.Likelihood(jnp.float32(loc), jnp.float32(logvar)), jnp.float32(x)),
      reference.gaussian_log_prob(loc, logvar, x), rtol=1e-5,
  )


@pytest.mark.parametrize(
    "fields, shape, message",
    [
        (dict(family="transformer"), (8, 8, 1), "family"),
        (dict(likelihood="poisson"), (8, 8, 1), "likelihood"),
        (dict(activation="swish"), (8, 8, 1), "activation"),
        (dict(family="conv"), (28, 28, 1), "multiples of 16"),
        (dict(hidden_layers=0), (8, 8, 1), "hidden_layers=0 must be >= 1"),
        (dict(family="conv", hidden_layers=2), (32, 32, 1), "hidden_layers=2 is for family='mlp'"),
        (dict(likelihood="gaussian", gaussian_logvar="small"), (8, 8, 1), "gaussian_logvar"),
        (dict(content_variance="per_group"), (8, 8, 1), "content_variance"),
    ],
)
def test_bad_model_config_is_explained(fields, shape, message):
  with pytest.raises(ValueError, match=message):
    models.build_model(_config(**fields), shape)
