"""Test-time use of a trained ML-VAE: encode (strategy 1 or 2), decode, swap content and style.

Strategy 1 takes content from a single observation; strategy 2 accumulates the evidence of
several observations of one group (the product of their posteriors), which also works for
groups never seen in training.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlvae_jax import groups
from mlvae_jax import workdir as workdir_lib
from mlvae_jax.models import MLVAE, Posterior, mean_observation
from mlvae_jax.restore import restore_state


class Trained(NamedTuple):
  """A restored run: its config, model and host parameters, at checkpoint `step`."""

  config: ml_collections.ConfigDict
  model: MLVAE
  params: Any
  step: int


def load(workdir: str, step: int | None = None) -> Trained:
  """Restores a run of `workdir` onto one device: the best checkpoint by
  `config.train.keep_best_metric` (else the latest), or checkpoint `step`."""
  saved = workdir_lib.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE))
  if saved is None:
    raise FileNotFoundError(
        f"{workdir} has no {workdir_lib.CONFIG_FILE}: it is not the workdir of a training run"
    )
  config = ml_collections.ConfigDict(saved)
  config.mesh.data = 1
  state, step, run = restore_state(config, workdir, step)
  return Trained(config, run.model, jax.device_get(state.params), step)


class ContentCode(NamedTuple):
  """Content posterior(s): one row per observation (strategy 1) or per group (strategy 2)."""

  mu: jax.Array
  logvar: jax.Array


@functools.partial(jax.jit, static_argnums=0)
def _encode_jit(model: MLVAE, params: dict, x: jax.Array) -> Posterior:
  return model.apply({"params": params}, x, method="encode")


def encode(model: MLVAE, params: dict, x: np.ndarray, *, batch_size: int = 1024) -> Posterior:
  """Per-observation posteriors of any number of observations, in fixed-size chunks.

  Chunks are padded to `batch_size` so one compilation serves every call.
  """
  x = np.asarray(x, np.float32)
  chunks = []
  for start in range(0, x.shape[0], batch_size):
    chunk = x[start:start + batch_size]
    padded = np.zeros((batch_size, *x.shape[1:]), np.float32)
    padded[: chunk.shape[0]] = chunk
    out = _encode_jit(model, params, jnp.asarray(padded))
    chunks.append(jax.tree.map(lambda a, n=chunk.shape[0]: np.asarray(a[:n]), out))
  return Posterior(*(np.concatenate(parts) for parts in zip(*chunks)))


def content_strategy1(model: MLVAE, params: dict, x: np.ndarray) -> ContentCode:
  """Content of each observation on its own."""
  posterior = encode(model, params, x)
  return ContentCode(posterior.content_mu, posterior.content_logvar)


def content_strategy2(
    model: MLVAE, params: dict, x: np.ndarray, group_ids: np.ndarray, num_groups: int
) -> ContentCode:
  """Content of each group, accumulated over its members (ids in [0, num_groups), any order)."""
  group_ids = np.asarray(group_ids, np.int32)
  order = np.argsort(group_ids, kind="stable")
  posterior = encode(model, params, np.asarray(x)[order])
  mu, logvar = groups.accumulate_evidence(
      jnp.asarray(posterior.content_mu), jnp.asarray(posterior.content_logvar),
      jnp.asarray(group_ids[order]), num_groups, jnp.ones(len(order), bool),
  )
  return ContentCode(np.asarray(mu), np.asarray(logvar))


@functools.partial(jax.jit, static_argnums=0)
def _decode_jit(model: MLVAE, params: dict, content: jax.Array, style: jax.Array) -> jax.Array:
  return mean_observation(model.apply({"params": params}, content, style, method="decode"))


def decode(model: MLVAE, params: dict, content: np.ndarray, style: np.ndarray) -> np.ndarray:
  """Expected observations for paired content and style codes."""
  return np.asarray(_decode_jit(model, params, jnp.asarray(content), jnp.asarray(style)))


def reconstruct(model: MLVAE, params: dict, x: np.ndarray) -> np.ndarray:
  """Posterior-mean reconstructions (strategy 1 content, own style)."""
  posterior = encode(model, params, x)
  return decode(model, params, posterior.content_mu, posterior.style_mu)


def swap(model: MLVAE, params: dict, content_x: np.ndarray, style_x: np.ndarray) -> np.ndarray:
  """Grid [R, C, ...]: row r keeps the content of content_x[r], column c the style of style_x[c]."""
  content = encode(model, params, content_x).content_mu
  style = encode(model, params, style_x).style_mu
  rows, cols = content.shape[0], style.shape[0]
  images = decode(model, params, np.repeat(content, cols, axis=0), np.tile(style, (rows, 1)))
  return images.reshape(rows, cols, *images.shape[1:])
