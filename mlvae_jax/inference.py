"""Test-time use of a trained ML-VAE: encode (strategy 1 or 2), decode, swap content and style.

Strategy 1 takes content from a single observation; strategy 2 accumulates the evidence of
several observations of one group (the product of their posteriors), which also works for
groups never seen in training.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlvae_jax import configs, groups
from mlvae_jax.training import checkpoint as checkpoint_lib
from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.models import MLVAE, Posterior, mean_observation
from mlvae_jax.training.restore import restore_state
from mlvae_jax.training.workdir import SetupError


@dataclasses.dataclass(frozen=True)
class Trained:
  """A restored run (its config, model and host parameters, at checkpoint `step`), used
  without passing (model, params) around. Every method takes one observation [*obs] or any
  batch [..., *obs] and returns numpy arrays; each compiles once per input shape (rows are
  padded to a power of two, so a new batch size seldom compiles anew).
  """

  config: ml_collections.ConfigDict
  model: MLVAE
  params: Any
  step: int

  def encode(self, x: np.ndarray) -> Posterior:
    """Content and style posteriors of each observation (content: strategy 1)."""
    return encode(self.model, self.params, x)

  def content(self, x: np.ndarray, group_ids: np.ndarray | None = None,
              num_groups: int | None = None) -> ContentCode:
    """Strategy 2: each group's content posterior, the product of its members' posteriors.

    `group_ids` [n] gives each observation's group in [0, num_groups) (default: max id + 1),
    giving [num_groups, Dc]; without it all of `x` is one group, giving [Dc].
    """
    x = np.asarray(x, np.float32)
    batch = x.reshape(-1, *self.model.observation_shape)
    if group_ids is None:
      code = content_strategy2(self.model, self.params, batch, np.zeros(len(batch)), 1)
      return ContentCode(code.mu[0], code.logvar[0])
    group_ids = np.asarray(group_ids, np.int32).reshape(-1)
    if len(group_ids) != len(batch):
      raise ValueError(f"{len(group_ids)} group_ids for {len(batch)} observations; give one each")
    num_groups = int(group_ids.max()) + 1 if num_groups is None else num_groups
    return content_strategy2(self.model, self.params, batch, group_ids, num_groups)

  def decode(self, content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Expected observations of content [..., Dc] and style [..., Ds] (leading dims broadcast)."""
    return decode(self.model, self.params, content, style)

  def reconstruct(self, x: np.ndarray) -> np.ndarray:
    """Posterior-mean reconstructions."""
    return reconstruct(self.model, self.params, x)

  def swap(self, content_x: np.ndarray, style_x: np.ndarray) -> np.ndarray:
    """Grid [R, C, *obs]: content of content_x[r] rendered in the style of style_x[c]."""
    return swap(self.model, self.params, content_x, style_x)

  def sample(self, n: int, *, rng: int | jax.Array = 0) -> np.ndarray:
    """`n` observations from the prior; `rng` is a seed or a `jax.random` key."""
    return sample(self.model, self.params, n, rng)


def load(workdir: str, step: int | None = None) -> Trained:
  """Restores a run of `workdir` onto one device: the best checkpoint by
  `config.train.keep_best_metric` (else the latest), or checkpoint `step`."""
  saved = _run_config(workdir)
  config = ml_collections.ConfigDict(configs.fill_later_defaults(saved))
  config.mesh.data = 1
  state, step, setup = restore_state(config, workdir, step)
  return Trained(config, setup.model, jax.device_get(state.params), step)


def _run_config(workdir: str) -> dict[str, Any]:
  """WORKDIR/config.json; if it is damaged or missing, the config saved with the newest
  intact checkpoint (said in one line)."""
  path = os.path.join(workdir, workdir_lib.CONFIG_FILE)
  problem = "is missing"
  try:
    saved = workdir_lib.read_json(path)
  except (ValueError, OSError) as e:
    saved, problem = None, f"is damaged ({type(e).__name__})"
  if saved is not None:
    return saved
  checkpoints = checkpoint_lib.Checkpoints(workdir, read_only=True)
  if not checkpoints.steps() and problem == "is missing":
    raise FileNotFoundError(
        f"{workdir} has no {workdir_lib.CONFIG_FILE}: it is not the workdir of a training run")
  if not checkpoints.steps():
    raise SetupError(f"{path} {problem} and no checkpoint of {workdir} is intact to take the "
                     "config from")
  step = checkpoints.steps()[-1]
  print(f"{path} {problem}; using the config saved with checkpoint {step}", file=sys.stderr)
  return checkpoints.saved_config(step)


class ContentCode(NamedTuple):
  """Content posterior(s): one row per observation (strategy 1) or per group (strategy 2)."""

  mu: jax.Array
  logvar: jax.Array


_MIN_CHUNK = 64  # rows: small calls share one compilation, and cost little more than one row


def _chunk_rows(n: int, batch_size: int) -> int:
  """Rows per jitted call: the next power of two >= n (at least 64, at most `batch_size`),
  so any number of rows compiles one of a few shapes and one observation does not pay for
  1024."""
  return min(batch_size, max(_MIN_CHUNK, 1 << max(0, n - 1).bit_length()))


def _map_chunks(fn: Callable[..., Any], arrays: tuple[np.ndarray, ...], batch_size: int) -> Any:
  """`fn` over row chunks of equally long arrays, each chunk zero-padded to one shape; the
  rows of the outputs concatenated, padding dropped."""
  n = len(arrays[0])
  if n == 0:
    raise ValueError("no observations or codes given: pass at least one")
  size = _chunk_rows(n, batch_size)
  outputs = []
  for start in range(0, n, size):
    chunk = [a[start:start + size] for a in arrays]
    rows = len(chunk[0])
    padded = [np.concatenate([c, np.zeros((size - rows, *c.shape[1:]), c.dtype)]) for c in chunk]
    out = fn(*(jnp.asarray(a) for a in padded))
    outputs.append(jax.tree.map(lambda a, rows=rows: np.asarray(a[:rows]), out))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def _leading_shape(x: np.ndarray, model: MLVAE) -> tuple[int, ...]:
  """The dims of `x` before one observation's shape: () for one observation, (n,) for a batch."""
  shape = tuple(model.observation_shape)
  if x.shape[x.ndim - len(shape):] != shape:
    raise ValueError(
        f"observations must have shape {shape} (one) or [..., {', '.join(map(str, shape))}] "
        f"(any batch); got {x.shape}"
    )
  return x.shape[:x.ndim - len(shape)]


@functools.partial(jax.jit, static_argnums=0)
def _encode_jit(model: MLVAE, params: dict, x: jax.Array) -> Posterior:
  return model.apply({"params": params}, x, method="encode")


def encode(model: MLVAE, params: dict, x: np.ndarray, *, batch_size: int = 1024) -> Posterior:
  """Per-observation posteriors of one observation [*obs] or any array of them [..., *obs]
  (fields [..., D]), in padded chunks of at most `batch_size` rows."""
  x = np.asarray(x, np.float32)
  leading = _leading_shape(x, model)
  flat = x.reshape(-1, *model.observation_shape)
  posterior = _map_chunks(functools.partial(_encode_jit, model, params), (flat,), batch_size)
  return Posterior(*(a.reshape(*leading, a.shape[-1]) for a in posterior))


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


def decode(model: MLVAE, params: dict, content: np.ndarray, style: np.ndarray, *,
           batch_size: int = 1024) -> np.ndarray:
  """Expected observations [..., *obs] for content [..., Dc] and style [..., Ds] codes whose
  leading dims broadcast: one pair, paired batches, one content with many styles, a grid."""
  content, style = np.asarray(content, np.float32), np.asarray(style, np.float32)
  dims = (model.encoder.content_dim, model.encoder.style_dim)
  if (content.shape[-1:], style.shape[-1:]) != ((dims[0],), (dims[1],)):
    raise ValueError(
        f"codes must end in the model's content_dim {dims[0]} and style_dim {dims[1]}; got "
        f"content {content.shape} and style {style.shape}"
    )
  leading = np.broadcast_shapes(content.shape[:-1], style.shape[:-1])
  codes = [np.broadcast_to(c, (*leading, d)).reshape(-1, d) for c, d in zip((content, style), dims)]
  images = _map_chunks(functools.partial(_decode_jit, model, params), tuple(codes), batch_size)
  return images.reshape(*leading, *images.shape[1:])


def reconstruct(model: MLVAE, params: dict, x: np.ndarray) -> np.ndarray:
  """Posterior-mean reconstructions (strategy 1 content, own style)."""
  posterior = encode(model, params, x)
  return decode(model, params, posterior.content_mu, posterior.style_mu)


def swap(model: MLVAE, params: dict, content_x: np.ndarray, style_x: np.ndarray) -> np.ndarray:
  """Grid [R, C, ...]: row r keeps the content of content_x[r], column c the style of
  style_x[c] (a single observation on either side drops its axis)."""
  content = encode(model, params, content_x).content_mu
  style = encode(model, params, style_x).style_mu
  rows = content.reshape(*content.shape[:-1], *[1] * (style.ndim - 1), content.shape[-1])
  return decode(model, params, rows, style)


def sample(model: MLVAE, params: dict, n: int, rng: int | jax.Array = 0) -> np.ndarray:
  """`n` observations [n, *obs] decoded from codes drawn from the priors p(C) = p(S) = N(0, I);
  `rng` is a seed or a `jax.random` key."""
  key = jax.random.key(rng) if isinstance(rng, int) else rng
  content_key, style_key = jax.random.split(key)
  content = jax.random.normal(content_key, (n, model.encoder.content_dim))
  style = jax.random.normal(style_key, (n, model.encoder.style_dim))
  return decode(model, params, content, style)
