"""Short ML-VAE training runs on real data: content identifies the group, and with the
chosen setting (style-group HSIC, 2-d style, single-member content) the style code no longer
does.

Uses scikit-learn's bundled 8x8 digits directly (the data package has its own tests), grouped
by class, with groups drawn at random each step (8 of 8 images; the chosen setting: 32 of 2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

from mlvae_jax import configs, inference, models, objectives
from mlvae_jax.evaluation.probes import probe_accuracy, probe_all

STEPS, GROUPS, GROUP_SIZE = 600, 8, 8
# Measured over init seeds 0-2: loss 283-289 -> 191-192 per group; content-code probe accuracy
# 0.93-0.94 (chance 0.10); the style code's 0.44-0.55, at least 0.38 below content.
MIN_CONTENT_ACCURACY = 0.75
MIN_CONTENT_OVER_STYLE = 0.2
# The chosen setting (experiments/mnist.py, without its cosine schedule): style-group HSIC 1e5,
# a 2-d style code, a 20-d content code, single-member content at rate 0.9, groups of 2 and
# one learned content variance (isotropic). Measured over init seeds 0-2 after 600 steps:
# style linear 0.091-0.106 and 5-NN 0.103-0.149 (chance 0.10; the paper's setting reads 0.55 /
# 0.71), content linear 0.937-0.955 and 5-NN 0.960-0.967 (per-image variances at rate 0.75:
# 0.957-0.962 and 0.965-0.972). Each threshold keeps a margin of about 0.05 from the worst seed.
CHOSEN = {"style_hsic_weight": 1e5, "style_dim": 2, "content_dim": 20,
          "single_member_rate": 0.9, "groups": 32, "group_size": 2,
          "content_variance": "isotropic"}
MAX_STYLE_CHOSEN = 0.2
MIN_CONTENT_CHOSEN = 0.88


def _grouped_batch(rng, x, labels, groups, group_size):
  classes = rng.choice(10, groups, replace=groups > 10)
  index = np.concatenate([rng.choice(np.nonzero(labels == c)[0], group_size, replace=False) for c in classes])
  return {"x": jnp.asarray(x[index]), "group_ids": jnp.repeat(jnp.arange(groups, dtype=jnp.int32), group_size),
          "mask": jnp.ones(groups * group_size, bool)}


def _digits():
  digits = load_digits()
  x = (digits.images / 16.0).astype(np.float32)[..., None]
  order = np.random.default_rng(0).permutation(len(x))
  return x, digits.target, order[:1400], order[1400:]


def _train(x, labels, style_hsic_weight=0.0, style_dim=10, content_dim=10, single_member_rate=0.0,
           groups=GROUPS, group_size=GROUP_SIZE, content_variance="per_image", seed=0):
  """600 Adam steps on random class groups from init seed `seed`; returns the loss curve,
  the model and params."""
  config = configs.base_config()
  config.model.hidden = 128
  config.data.num_groups, config.data.batch_size = groups, groups * group_size
  config.objective.style_hsic_weight = style_hsic_weight
  config.objective.single_member_rate = single_member_rate
  config.model.style_dim, config.model.content_dim = style_dim, content_dim
  config.model.content_variance = content_variance
  model = models.build_model(config.model, x.shape[1:])
  params = model.init(jax.random.key(seed), jnp.asarray(x[:1]))["params"]
  optimizer = optax.adam(config.optim.learning_rate)
  loss_fn = objectives.make_loss_fn(model, config)

  @jax.jit
  def step(params, opt_state, batch, rng, step_index):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng, step_index)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = optimizer.init(params)
  rng = np.random.default_rng(1)
  losses = []
  for i in range(STEPS):
    params, opt_state, loss = step(params, opt_state, _grouped_batch(rng, x, labels, groups, group_size),
                                   jax.random.key(i), jnp.int32(i))
    losses.append(float(loss))
  return losses, model, params


def test_training_on_digits_lowers_loss_and_content_predicts_class():
  x, labels, train, test = _digits()
  losses, model, params = _train(x[train], labels[train])
  assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-50:])

  train_code = inference.encode(model, params, x[train])
  test_code = inference.encode(model, params, x[test])
  content = probe_accuracy(train_code.content_mu, labels[train], test_code.content_mu, labels[test])
  style = probe_accuracy(train_code.style_mu, labels[train], test_code.style_mu, labels[test])
  assert content > MIN_CONTENT_ACCURACY, content
  assert content > style + MIN_CONTENT_OVER_STYLE, (content, style)


def test_chosen_setting_keeps_the_digit_out_of_style_and_in_content():
  x, labels, train, test = _digits()
  _, model, params = _train(x[train], labels[train], **CHOSEN)
  train_code = inference.encode(model, params, x[train])
  test_code = inference.encode(model, params, x[test])
  kinds = ("linear", "knn")
  style = probe_all(train_code.style_mu, labels[train], test_code.style_mu, labels[test], kinds)
  content = probe_all(train_code.content_mu, labels[train], test_code.content_mu, labels[test], kinds)
  assert max(style.values()) < MAX_STYLE_CHOSEN, style
  assert min(content.values()) > MIN_CONTENT_CHOSEN, content
