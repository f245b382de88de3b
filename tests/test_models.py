"""Model families, likelihoods and config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, models
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
    ],
)
def test_bad_model_config_is_explained(fields, shape, message):
  with pytest.raises(ValueError, match=message):
    models.build_model(_config(**fields), shape)
