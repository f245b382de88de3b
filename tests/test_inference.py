"""Test-time encoding (strategies 1 and 2), decoding and swapping."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, data, inference, models
from tests import reference


def _model():
  config = configs.base_config().model
  config.hidden, config.content_dim, config.style_dim = 16, 3, 2
  model = models.build_model(config, (4, 4, 1))
  return model, model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]


def test_encode_in_chunks_equals_one_pass():
  model, params = _model()
  x = np.random.default_rng(0).uniform(size=(11, 4, 4, 1)).astype(np.float32)
  chunked = inference.encode(model, params, x, batch_size=4)
  whole = model.apply({"params": params}, jnp.asarray(x), method="encode")
  for a, b in zip(chunked, whole):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_strategy2_is_the_product_over_each_group_in_any_order():
  model, params = _model()
  rng = np.random.default_rng(1)
  x = rng.uniform(size=(9, 4, 4, 1)).astype(np.float32)
  ids = np.array([2, 0, 1, 2, 0, 2, 1, 1, 2])
  pooled = inference.content_strategy2(model, params, x, ids, 3)
  single = inference.content_strategy1(model, params, x)
  for g in range(3):
    ref_mu, ref_logvar = reference.product_of_normals(single.mu[ids == g], single.logvar[ids == g])
    np.testing.assert_allclose(pooled.mu[g], ref_mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pooled.logvar[g], ref_logvar, rtol=1e-4, atol=1e-5)


def test_swap_grid_keeps_content_along_rows_and_style_along_columns():
  model, params = _model()
  rng = np.random.default_rng(2)
  content_x = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
  style_x = rng.uniform(size=(5, 4, 4, 1)).astype(np.float32)
  grid = inference.swap(model, params, content_x, style_x)
  assert grid.shape == (3, 5, 4, 4, 1)
  content = inference.encode(model, params, content_x).content_mu
  style = inference.encode(model, params, style_x).style_mu
  np.testing.assert_allclose(grid[1, 4], inference.decode(model, params, content[1:2], style[4:5])[0], rtol=1e-5)
  assert np.all((grid >= 0) & (grid <= 1))  # Bernoulli means


def test_load_restores_a_trained_run_onto_one_device(tmp_path):
  from experiments import digits
  from mlvae_jax import train

  config = digits.get_config("smoke")
  config.data.data_dir = str(tmp_path / "tfds")
  train.train_and_evaluate(config, str(tmp_path / "run"))
  trained = inference.load(str(tmp_path / "run"))
  assert trained.step == config.train.num_steps
  assert trained.config.data.name == "digits" and trained.config.mesh.data == 1
  x = data.load_split(trained.config.data, "test").x[:5]
  code = inference.content_strategy1(trained.model, trained.params, x)
  assert code.mu.shape == (5, config.model.content_dim) and np.all(np.isfinite(code.mu))


def test_load_explains_a_directory_that_is_no_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="not the workdir of a training run"):
    inference.load(str(tmp_path))
