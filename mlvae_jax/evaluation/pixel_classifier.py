"""A classifier of raw observations, fitted on the dataset's training pixels.

Swap consistency asks what a decoded image *shows*; a latent probe cannot answer that, so an
independent judge is trained on real images (never on decoded ones) and its own held-out
accuracy is reported beside every score it gives.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


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


@functools.partial(jax.jit, static_argnums=0)
def _logits(module: PixelMLP, params: Any, x: jax.Array) -> jax.Array:
  return module.apply({"params": params}, x)


@dataclasses.dataclass(frozen=True)
class PixelClassifier:
  """A fitted classifier: `predict(images) -> class indices`."""

  module: PixelMLP
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


def fit_pixel_classifier(
    images: np.ndarray, labels: np.ndarray, *, hidden: int = 512, epochs: int = 4,
    batch_size: int = 128, learning_rate: float = 1e-3, seed: int = 0,
) -> PixelClassifier:
  """Adam on softmax cross-entropy over `epochs` shuffled passes of the training images."""
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if len(images) < batch_size:
    raise ValueError(f"the pixel classifier needs at least {batch_size} training images, got {len(images)}")
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
