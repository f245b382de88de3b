"""A classifier of raw observations, fitted on the dataset's training pixels.

Swap consistency asks what a decoded image *shows*; a latent probe cannot answer that, so an
independent judge is trained on real images (never on decoded ones) and its own held-out
accuracy is reported beside every score it gives.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mlvae_jax import models


class PixelMLP(nn.Module):
  """Two hidden ReLU layers on the flattened image."""

  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.reshape(x.shape[0], -1)
    h = nn.relu(nn.Dense(self.hidden)(h))
    h = nn.relu(nn.Dense(self.hidden)(h))
    return nn.Dense(self.num_classes)(h)


class EncoderClassifier(nn.Module):
  """An ML-VAE encoder whose content head is read as class logits: a judge with the model's
  own architecture (a conv judge sees shapes a pixel MLP misses; tools/factor_ceiling.py)."""

  encoder: nn.Module

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.encoder(x).content_mu


def encoder_classifier(model_config: ml_collections.ConfigDict, observation_shape: Sequence[int],
                       num_classes: int) -> EncoderClassifier:
  """The encoder that `model_config` builds, with `num_classes` content outputs."""
  config = model_config.copy_and_resolve_references()
  config.content_dim = num_classes
  return EncoderClassifier(models.build_model(config, observation_shape).encoder)


@functools.partial(jax.jit, static_argnums=0)
def _logits(module: nn.Module, params: Any, x: jax.Array) -> jax.Array:
  return module.apply({"params": params}, x)


@dataclasses.dataclass(frozen=True)
class PixelClassifier:
  """A fitted classifier: `predict(images) -> class indices`."""

  module: nn.Module
  params: Any

  def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class indices; images are fed in fixed-size (padded) chunks so one compile serves all."""
    images = np.asarray(images, np.float32)
    out = []
    for start in range(0, len(images), batch_size):
      chunk = images[start:start + batch_size]
      padded = np.zeros((batch_size, *images.shape[1:]), np.float32)
      padded[:len(chunk)] = chunk
      out.append(np.asarray(jnp.argmax(_logits(self.module, self.params, padded), -1))[:len(chunk)])
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

  def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(self.predict(images) == np.asarray(labels)))


@dataclasses.dataclass(frozen=True)
class FitSettings:
  """How a classifier is fitted, besides its module and its data (a cached judge's key
  records them: judge_cache.py)."""

  epochs: int = 4
  batch_size: int = 128
  learning_rate: float = 1e-3
  seed: int = 0


def fit_pixel_classifier(
    images: np.ndarray, labels: np.ndarray, *, hidden: int = 512,
    epochs: int = FitSettings.epochs, batch_size: int = FitSettings.batch_size,
    learning_rate: float = FitSettings.learning_rate, seed: int = FitSettings.seed,
    module: nn.Module | None = None,
) -> PixelClassifier:
  """Adam on softmax cross-entropy over `epochs` shuffled passes of the training images.

  `module` maps images to logits over labels.max() + 1 classes (default: a PixelMLP of
  `hidden` units), so the same fit serves any architecture."""
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if len(images) < batch_size:
    raise ValueError(f"the pixel classifier needs at least {batch_size} training images, got {len(images)}")
  if module is None:
    module = PixelMLP(hidden=hidden, num_classes=int(labels.max()) + 1)
  rng = jax.random.key(seed)
  params = module.init(rng, jnp.zeros((1, *images.shape[1:])))["params"]
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(module.apply({"params": p}, x), y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  order_rng = np.random.default_rng(seed)
  steps_per_epoch = len(images) // batch_size
  for _ in range(epochs):
    order = order_rng.permutation(len(images))[: steps_per_epoch * batch_size]
    for batch in order.reshape(steps_per_epoch, batch_size):
      params, opt_state = step(params, opt_state, images[batch], labels[batch])
  return PixelClassifier(module, params)
