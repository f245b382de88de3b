"""Flax Linen encoders, decoders and observation likelihoods of the ML-VAE.

The encoder maps one observation to two diagonal Normals (content and style); the decoder maps
a (content, style) pair back to the parameters of p(x | c, s). Both are pure init/apply
modules, so objectives and evaluation call them through `model.apply` with explicit params.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax.pose import canonical
from mlvae_jax.configs import check_choice
from mlvae_jax.pose.warp import POSE_DIMS, WARPS, PoseWarp, dedicated_style

LIKELIHOODS = ("bernoulli", "gaussian")
FAMILIES = ("mlp", "conv")
CONTENT_VARIANCES = ("per_image", "shared", "isotropic")  # model.content_variance: see _NormalHeads
POSE_SOURCES = ("encoder", "moments")  # model.pose_from: see MLVAE.encode
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
}


class Posterior(NamedTuple):
  """Per-observation diagonal Normal posteriors q(C | x_i) and q(S | x_i)."""

  content_mu: jax.Array
  content_logvar: jax.Array
  style_mu: jax.Array
  style_logvar: jax.Array


class Likelihood(NamedTuple):
  """Parameters of p(x | c, s): Bernoulli logits in `loc`, or Gaussian mean and log-variance."""

  loc: jax.Array
  logvar: jax.Array | None = None


class _NormalHeads(nn.Module):
  """Two linear heads giving (mu, logvar) of the content and style posteriors.

  With `content_variance='shared'` the content head gives the mean only and the content
  log-variance is one learned vector for every input (a constant-variance posterior, the
  CV-VAE of Ghosh et al. 2020): the product over a group is then the members' average mean
  with variance shrinking as 1/n, whatever the encoder makes of an unfamiliar image.
  'isotropic' learns one log-variance for every input and every dimension, so that product
  also weighs no dimension above another."""

  content_dim: int
  style_dim: int
  content_variance: str = "per_image"

  @nn.compact
  def __call__(self, h: jax.Array) -> Posterior:
    style = nn.Dense(2 * self.style_dim, name="style")(h)
    s_mu, s_logvar = jnp.split(style, 2, axis=-1)
    if self.content_variance in ("shared", "isotropic"):
      c_mu = nn.Dense(self.content_dim, name="content")(h)
      size = self.content_dim if self.content_variance == "shared" else 1
      shared = self.param("content_logvar", nn.initializers.zeros, (size,))
      c_logvar = jnp.broadcast_to(shared, c_mu.shape)
    else:
      content = nn.Dense(2 * self.content_dim, name="content")(h)
      c_mu, c_logvar = jnp.split(content, 2, axis=-1)
    return Posterior(c_mu, c_logvar, s_mu, s_logvar)


def _hidden_stack(h: jax.Array, width: int, activation: str, layers: int) -> jax.Array:
  """`layers` dense layers of `width` units, each followed by `activation`; called from a
  compact method, so the layers belong to (and are named in) the calling module."""
  for _ in range(layers):
    h = _ACTIVATIONS[activation](nn.Dense(width)(h))
  return h


class MLPEncoder(nn.Module):
  """The paper's MNIST encoder: flatten -> hidden (tanh) -> content and style heads.

  `hidden_layers` > 1 stacks more hidden layers of the same width (1 is the paper's model and
  keeps its parameter names, so older checkpoints restore)."""

  content_dim: int
  style_dim: int
  hidden: int = 500
  activation: str = "tanh"
  hidden_layers: int = 1
  content_variance: str = "per_image"

  @nn.compact
  def __call__(self, x: jax.Array) -> Posterior:
    h = _hidden_stack(x.reshape(x.shape[0], -1), self.hidden, self.activation, self.hidden_layers)
    return _NormalHeads(self.content_dim, self.style_dim, self.content_variance)(h)


class MLPDecoder(nn.Module):
  """Concatenated (content, style) -> `hidden_layers` x hidden (tanh) -> one output per pixel."""

  observation_shape: Sequence[int]
  hidden: int = 500
  activation: str = "tanh"
  hidden_layers: int = 1

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = _hidden_stack(z, self.hidden, self.activation, self.hidden_layers)
    out = nn.Dense(math.prod(self.observation_shape))(h)
    return out.reshape((z.shape[0], *self.observation_shape))


class ConvEncoder(nn.Module):
  """disentanglement_lib's conv encoder: 4 stride-2 4x4 convs (32, 32, 64, 64), dense 256."""

  content_dim: int
  style_dim: int
  hidden: int = 256
  activation: str = "relu"
  content_variance: str = "per_image"

  @nn.compact
  def __call__(self, x: jax.Array) -> Posterior:
    act = _ACTIVATIONS[self.activation]
    h = x
    for features in (32, 32, 64, 64):
      h = act(nn.Conv(features, (4, 4), strides=(2, 2), padding="SAME")(h))
    h = act(nn.Dense(self.hidden)(h.reshape(h.shape[0], -1)))
    return _NormalHeads(self.content_dim, self.style_dim, self.content_variance)(h)


class ConvDecoder(nn.Module):
  """Mirror of ConvEncoder: dense 256 -> dense to (R/16)^2 x 64 -> 4 stride-2 transposed convs."""

  observation_shape: Sequence[int]
  hidden: int = 256
  activation: str = "relu"

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = _ACTIVATIONS[self.activation]
    height, width, channels = self.observation_shape
    base_h, base_w = height // 16, width // 16
    h = act(nn.Dense(self.hidden)(z))
    h = act(nn.Dense(base_h * base_w * 64)(h)).reshape(z.shape[0], base_h, base_w, 64)
    for features in (64, 32, 32):
      h = act(nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME")(h))
    return nn.ConvTranspose(channels, (4, 4), strides=(2, 2), padding="SAME")(h)


class MLVAE(nn.Module):
  """Encoder, decoder and (for a learned Gaussian) the per-pixel observation log-variance."""

  encoder: nn.Module
  decoder: nn.Module
  likelihood: str
  observation_shape: Sequence[int]
  fixed_logvar: float | None = None  # Gaussian only; None means learned per pixel
  pose_warp: nn.Module | None = None  # turns and moves the decoder's canvas by a pose from style
  # Harmonic orders of the moment pose (canonical.py); None: the encoder learns the pose
  canonical_harmonics: tuple[int, ...] | None = None
  canonical_angle: str = "argmax"  # the moment pose's angle rule (canonical.ANGLE_RULES)

  def setup(self):
    if self.likelihood == "gaussian" and self.fixed_logvar is None:
      self.obs_logvar = self.param("obs_logvar", nn.initializers.zeros, tuple(self.observation_shape))

  def encode(self, x: jax.Array) -> Posterior:
    """q(C | x) and q(S | x). With a moment pose the encoder sees x in its canonical frame
    (centred, turned back) and the pose dimensions' posterior is that pose with the fixed
    small variance canonical.POSE_LOGVAR, so the warp undoes what the canonicalisation did."""
    if self.canonical_harmonics is None:
      return self.encoder(x)
    angle, centres = canonical.canonical_pose(x, self.canonical_harmonics, self.canonical_angle)
    posterior = self.encoder(canonical.to_canonical_frame(x, angle, centres))
    pose_mu = dedicated_style(angle, centres).astype(posterior.style_mu.dtype)
    return posterior._replace(
        style_mu=posterior.style_mu.at[:, :POSE_DIMS].set(pose_mu),
        style_logvar=posterior.style_logvar.at[:, :POSE_DIMS].set(canonical.POSE_LOGVAR))

  def decode(self, content: jax.Array, style: jax.Array) -> Likelihood:
    drawn = style if self.pose_warp is None else self.pose_warp.drawn_style(style)
    loc = self.decoder(jnp.concatenate([content, drawn], axis=-1))
    if self.pose_warp is not None:
      loc = self.pose_warp(loc, style)
    if self.likelihood == "bernoulli":
      return Likelihood(loc)
    if self.fixed_logvar is None:
      logvar = jnp.broadcast_to(self.obs_logvar, loc.shape)
    else:
      logvar = jnp.full(loc.shape, self.fixed_logvar, loc.dtype)
    return Likelihood(loc, logvar)

  def __call__(self, x: jax.Array) -> Likelihood:
    """Encodes and decodes posterior means; used by `init` to create every parameter."""
    posterior = self.encode(x)
    return self.decode(posterior.content_mu, posterior.style_mu)


def build_model(model_config: ml_collections.ConfigDict, observation_shape: Sequence[int]) -> MLVAE:
  """Builds the MLVAE described by `config.model` for observations of `observation_shape`."""
  shape = tuple(int(d) for d in observation_shape)
  check_choice("model.family", model_config.family, FAMILIES)
  check_choice("model.likelihood", model_config.likelihood, LIKELIHOODS)
  check_choice("model.activation", model_config.activation, tuple(_ACTIVATIONS))
  check_choice("model.content_variance", model_config.content_variance, CONTENT_VARIANCES)
  check_choice("model.decoder_warp", model_config.decoder_warp, WARPS)
  check_choice("model.pose_from", model_config.pose_from, POSE_SOURCES)
  check_choice("model.canonical_angle", model_config.canonical_angle,
               tuple(canonical.ANGLE_RULES))
  if model_config.pose_from == "moments" and model_config.decoder_warp != "rigid_dedicated":
    raise ValueError(f"config.model.pose_from='moments' sets the pose that the dedicated warp "
                     f"reads; config.model.decoder_warp={model_config.decoder_warp!r} has none. "
                     "Set config.model.decoder_warp='rigid_dedicated' or pose_from='encoder'.")
  if model_config.decoder_warp != "none" and len(shape) != 3:
    raise ValueError(f"config.model.decoder_warp={model_config.decoder_warp!r} warps images "
                     f"[H, W, C]; got observation shape {shape}. Leave it at 'none'.")
  if model_config.decoder_warp == "rigid_dedicated" and model_config.style_dim < POSE_DIMS:
    raise ValueError(f"config.model.decoder_warp='rigid_dedicated' takes the first {POSE_DIMS} "
                     f"style dimensions as the pose; config.model.style_dim="
                     f"{model_config.style_dim} is fewer. Raise it to {POSE_DIMS} or more.")
  dims = dict(content_dim=model_config.content_dim, style_dim=model_config.style_dim,
              content_variance=model_config.content_variance)
  common = dict(hidden=model_config.hidden, activation=model_config.activation)
  if model_config.family == "mlp":
    if model_config.hidden_layers < 1:
      raise ValueError(f"config.model.hidden_layers={model_config.hidden_layers} must be >= 1 "
                       "(1 is the paper's one-hidden-layer MLP)")
    depth = dict(hidden_layers=model_config.hidden_layers)
    encoder, decoder = MLPEncoder(**dims, **common, **depth), MLPDecoder(shape, **common, **depth)
  else:
    if model_config.hidden_layers != 1:
      raise ValueError(f"config.model.hidden_layers={model_config.hidden_layers} is for "
                       "family='mlp'; the conv model has a fixed depth, so leave it at 1")
    if len(shape) != 3 or shape[0] % 16 or shape[1] % 16:
      raise ValueError(
          f"config.model.family='conv' needs [H, W, C] images with H and W multiples of 16 "
          f"(e.g. 32x32 or 64x64); got observation shape {shape}. Use family='mlp' instead."
      )
    encoder, decoder = ConvEncoder(**dims, **common), ConvDecoder(shape, **common)
  return MLVAE(
      encoder=encoder,
      decoder=decoder,
      likelihood=model_config.likelihood,
      observation_shape=shape,
      fixed_logvar=_parse_logvar(model_config.gaussian_logvar),
      pose_warp=(None if model_config.decoder_warp == "none"
                 else PoseWarp(dedicated=model_config.decoder_warp == "rigid_dedicated")),
      canonical_harmonics=(canonical.parse_harmonics(model_config.canonical_harmonics)
                           if model_config.pose_from == "moments" else None),
      canonical_angle=model_config.canonical_angle,
  )


def _parse_logvar(setting: str) -> float | None:
  if str(setting) == "learned":
    return None
  try:
    return float(setting)
  except ValueError:
    raise ValueError(
        f"config.model.gaussian_logvar={setting!r} must be 'learned' or a number such as '-2.0'"
    ) from None


def log_likelihood(likelihood: Likelihood, x: jax.Array) -> jax.Array:
  """log p(x | c, s) of one observation, summed over its dimensions (vmap it over a batch).

  The terms are summed along one flat axis: XLA:CPU sums a batch of [H, W, 1] images over
  three axes several times slower than over one (measured: 15% of the MNIST train step).
  """
  loc, x = likelihood.loc.reshape(-1), x.reshape(-1)
  if likelihood.logvar is None:
    # Bernoulli with logits l: x*l - softplus(l), exact for x in [0, 1] (continuous relaxation).
    terms = x * loc - jax.nn.softplus(loc)
  else:
    logvar = likelihood.logvar.reshape(-1)
    terms = -0.5 * (math.log(2 * math.pi) + logvar + (x - loc) ** 2 * jnp.exp(-logvar))
  return jnp.sum(terms)


def mean_observation(likelihood: Likelihood) -> jax.Array:
  """The expected observation under p(x | c, s): what reconstructions and samples show."""
  if likelihood.logvar is None:
    return jax.nn.sigmoid(likelihood.loc)
  return likelihood.loc
