"""Test-time encoding (strategies 1 and 2), decoding, swapping and sampling; the restored
run object `inference.Trained`."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, data, inference, models
from tests import reference


def _model(content_dim=3):
  config = configs.base_config().model
  config.hidden, config.content_dim, config.style_dim = 16, content_dim, 2
  model = models.build_model(config, (4, 4, 1))
  return model, model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]


@pytest.fixture
def traces():
  """Counts the traces of each jitted function (by name) while a test runs."""
  counts = collections.Counter()

  def listen(event, duration, fun_name=None, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/jaxpr_trace_duration":
      counts[fun_name] += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  yield counts
  jax.monitoring.unregister_event_duration_listener(listen)


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


def test_trained_takes_one_observation_or_any_batch():
  model, params = _model()
  trained = inference.Trained(configs.base_config(), model, params, step=0)
  rng = np.random.default_rng(3)
  x = rng.uniform(size=(2, 3, 4, 4, 1)).astype(np.float32)
  batch = trained.encode(x)
  assert batch.content_mu.shape == (2, 3, 3) and batch.style_logvar.shape == (2, 3, 2)
  one = trained.encode(x[1, 2])
  for a, b in zip(one, batch):
    np.testing.assert_allclose(a, b[1, 2], rtol=1e-5, atol=1e-6)
  images = trained.decode(batch.content_mu, batch.style_mu)
  assert images.shape == (2, 3, 4, 4, 1)
  np.testing.assert_allclose(trained.decode(one.content_mu, one.style_mu), images[1, 2], rtol=1e-5)
  np.testing.assert_allclose(trained.reconstruct(x[0, 1]), images[0, 1], rtol=1e-5)
  # One content code with several styles broadcasts.
  np.testing.assert_allclose(trained.decode(one.content_mu, batch.style_mu[0])[2],
                             trained.decode(one.content_mu, batch.style_mu[0, 2]), rtol=1e-5)
  flat = x.reshape(6, 4, 4, 1)
  ids = np.array([1, 0, 1, 1, 0, 2])
  np.testing.assert_allclose(trained.content(flat, ids).mu,
                             inference.content_strategy2(model, params, flat, ids, 3).mu, rtol=1e-5)
  pooled = trained.content(flat[ids == 1])  # no ids: all of x is one group
  np.testing.assert_allclose(pooled.mu, trained.content(flat, ids).mu[1], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(trained.content(flat[0]).mu, batch.content_mu[0, 0], rtol=1e-5)
  assert trained.swap(flat[:2], flat[2:]).shape == (2, 4, 4, 4, 1)
  np.testing.assert_allclose(trained.swap(flat[0], flat[2:]), trained.swap(flat[:1], flat[2:])[0],
                             rtol=1e-5)
  assert trained.swap(flat[0], flat[1]).shape == (4, 4, 1)
  samples = trained.sample(5, rng=7)
  assert samples.shape == (5, 4, 4, 1) and np.all((samples >= 0) & (samples <= 1))
  np.testing.assert_array_equal(samples, trained.sample(5, rng=jax.random.key(7)))
  assert not np.allclose(samples, trained.sample(5, rng=8))
  with pytest.raises(ValueError, match=r"observations must have shape \(4, 4, 1\).*got \(3, 5\)"):
    trained.encode(np.zeros((3, 5)))
  with pytest.raises(ValueError, match="content_dim 3 and style_dim 2"):
    trained.decode(np.zeros(2), np.zeros(2))
  with pytest.raises(ValueError, match="5 group_ids for 6 observations"):
    trained.content(flat, ids[:5])


def test_trained_compiles_once_per_shape(traces):
  model, params = _model(content_dim=5)  # a model no other test compiles
  trained = inference.Trained(configs.base_config(), model, params, step=0)
  x = np.random.default_rng(4).uniform(size=(100, 4, 4, 1)).astype(np.float32)

  def use(shift):
    trained.swap(x[:3] + shift, x[3:8])  # encodes 3 and 5 rows, decodes a 3x5 grid
    trained.encode(x[0] - shift)
    trained.encode(x[:70])  # padded to 128 rows; up to 64 rows pad to 64
    trained.sample(80, rng=int(shift * 10))  # decodes 80 rows, padded to 128

  use(0.0)
  assert traces["_encode_jit"] == 2 and traces["_decode_jit"] == 2  # rows 64, 128 for each
  first = dict(traces)
  use(0.1)
  use(0.2)
  assert dict(traces) == first


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
  np.testing.assert_allclose(trained.encode(x).content_mu, code.mu, rtol=1e-6)
  assert trained.content(x, [0, 0, 1, 1, 1]).mu.shape == (2, config.model.content_dim)
  assert trained.sample(3).shape == (3, 8, 8, 1)


def test_load_explains_a_directory_that_is_no_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="not the workdir of a training run"):
    inference.load(str(tmp_path))
