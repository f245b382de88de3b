"""KL warm-up: the betas in the loss ramp linearly from 0; the reported ELBO never changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import digits
from mlvae_jax import objectives
from mlvae_jax.models import build_model


@pytest.mark.parametrize("step, expected", [(0, 0.0), (250, 0.25), (1000, 1.0), (5000, 1.0)])
def test_scale_is_linear_then_one(step, expected):
  assert float(objectives.kl_warmup_scale(jnp.int32(step), 1000)) == pytest.approx(expected)


def test_no_step_or_no_warmup_means_full_betas():
  assert objectives.kl_warmup_scale(None, 1000) == 1.0
  assert objectives.kl_warmup_scale(jnp.int32(3), 0) == 1.0


def test_loss_at_step_t_weights_the_kls_by_t_over_warmup():
  config = digits.get_config("paper,smoke")  # the paper's objective: the ELBO terms alone
  config.objective.kl_warmup_steps = 100
  config.objective.beta_style = 2.0
  model = build_model(config.model, (8, 8, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  rng = np.random.default_rng(0)
  n, g = config.data.batch_size, config.data.num_groups
  batch = {"x": jnp.asarray(rng.uniform(size=(n, 8, 8, 1)), jnp.float32),
           "group_ids": jnp.asarray(np.sort(rng.integers(0, g, n)), jnp.int32),
           "mask": jnp.ones(n, bool)}
  loss_fn = objectives.make_loss_fn(model, config)
  key = jax.random.key(1)
  loss_30, m = loss_fn(params, batch, key, jnp.int32(30))
  loss_full, m_full = loss_fn(params, batch, key)
  expected = -(m["reconstruction"] - 0.3 * (2.0 * m["kl_style"] + m["kl_content"]))
  np.testing.assert_allclose(loss_30, expected, rtol=1e-5)
  np.testing.assert_allclose(m["elbo"], m_full["elbo"], rtol=1e-6)  # reported ELBO unweighted
  assert float(loss_full) > float(loss_30)
