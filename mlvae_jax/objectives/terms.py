"""The terms the loss adds to the paper's group ELBO, each with its weight: one table, `TERMS`.

Every term is a function `term(inputs: TermInputs, objective_config) -> scalar` and one row
`Term(metric, weight_key, fn)`: the loss adds `objective_config[weight_key] * fn(...)` and
reports the value under `metric`. A weight of 0 (every default: the paper's objective) is a
static switch, so the term is not even traced. A new term is one function and one row here,
its weight key (default 0) in configs.base_config, and a float64 reference of the term with a
gradient check in tests/objectives/test_term_gradients.py.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax import groups, models
from mlvae_jax.models import Posterior
from mlvae_jax.objectives import contrast, independence
from mlvae_jax.objectives.elbo import Batch, DecodeFn, content_posterior
from mlvae_jax.pose import canonical, equivariance, warp


class TermInputs(NamedTuple):
  """What a term may read: one batch, the encoder's posterior of it and the model's maps."""

  posterior: Posterior  # q(. | encoder_input)
  batch: Batch  # x, group_ids, mask
  group_ids: jax.Array  # [N] the groups the variant's ELBO pools over (elbo.variant_groups)
  num_groups: int  # slots of group_ids
  # The moment pose's harmonic orders (model.pose_from='moments'; empty for none): the first
  # warp.POSE_DIMS style means are then fixed functions of x, which no parameter moves.
  pose_harmonics: tuple[int, ...] = ()
  encode: Callable[[jax.Array], Posterior] | None = None  # the model's encoder
  decode: DecodeFn | None = None  # the model's decoder
  encoder_input: jax.Array | None = None  # x as the encoder saw it (masked under input_masking)
  rng: jax.Array | None = None  # the loss's key: fold in a constant of the term's own


TermFn = Callable[[TermInputs, ml_collections.ConfigDict], jax.Array]


class Term(NamedTuple):
  """One row of the table: the reported metric, the objective's weight key, the function."""

  metric: str
  weight_key: str
  fn: TermFn


def learnt_style(inputs: TermInputs) -> jax.Array:
  """The style means a parameter can move: without the moment pose's fixed dimensions, which
  in an HSIC's kernel would only add distance that drowns the learnt dimensions' dependence."""
  return inputs.posterior.style_mu[:, warp.POSE_DIMS if inputs.pose_harmonics else 0:]


def style_hsic(inputs: TermInputs, objective_config: ml_collections.ConfigDict) -> jax.Array:
  """independence.style_group_hsic of the learnt style; with style_hsic_group_kernel='content'
  the group side is each member's group content mean (the variant's pooled posterior)."""
  group_content = None
  if objective_config.style_hsic_group_kernel == "content":
    product_mu, _ = content_posterior(inputs.posterior, inputs.group_ids, inputs.num_groups,
                                      inputs.batch["mask"], objective_config.variant)
    group_content = groups.gather_to_members(product_mu, inputs.group_ids)
  return independence.style_group_hsic(learnt_style(inputs), inputs.group_ids,
                                       inputs.batch["mask"], group_content=group_content)


def content_style_hsic(inputs: TermInputs,
                       objective_config: ml_collections.ConfigDict) -> jax.Array:
  """independence.within_group_content_style_hsic of the content means and the learnt style;
  with content_style_hsic_pose also the moment pose, through canonical.pose_features (content
  can move, and a content code that follows the pose within a group is what the term is for)."""
  pose = None
  if objective_config.content_style_hsic_pose:
    pose = canonical.pose_features(inputs.posterior.style_mu[:, :warp.POSE_DIMS],
                                   inputs.pose_harmonics)
  return independence.within_group_content_style_hsic(
      inputs.posterior.content_mu, learnt_style(inputs), inputs.group_ids, inputs.batch["mask"],
      inputs.num_groups, pose=pose)


def content_contrast(inputs: TermInputs,
                     objective_config: ml_collections.ConfigDict) -> jax.Array:
  """contrast.content_group_contrast of the content means against the groups."""
  return contrast.content_group_contrast(inputs.posterior.content_mu, inputs.group_ids,
                                         inputs.batch["mask"],
                                         objective_config.content_contrast_temperature)


def equivariance_turns(inputs: TermInputs,
                       objective_config: ml_collections.ConfigDict) -> jax.Array:
  """The turns [N] angle_equivariance applies: uniform in [-max_turn, max_turn] radians, from
  the loss's key folded with 3."""
  x = inputs.encoder_input
  max_turn = objective_config.angle_equivariance_max_turn
  return jax.random.uniform(jax.random.fold_in(inputs.rng, 3), (x.shape[0],), x.dtype,
                            -max_turn, max_turn)


def angle_equivariance(inputs: TermInputs,
                       objective_config: ml_collections.ConfigDict) -> jax.Array:
  """equivariance.angle_equivariance of the encoder on its input and on that input turned
  about its centroids by `equivariance_turns`."""
  turn = equivariance_turns(inputs, objective_config)
  turned = inputs.encode(equivariance.turn_about_centroids(inputs.encoder_input, turn))
  posterior = inputs.posterior
  angle, angle_var = warp.dedicated_angle_posterior(posterior.style_mu, posterior.style_logvar)
  turned_angle, turned_var = warp.dedicated_angle_posterior(turned.style_mu, turned.style_logvar)
  return equivariance.angle_equivariance(angle, angle_var, turned_angle, turned_var, turn,
                                         inputs.batch["mask"],
                                         objective_config.angle_equivariance_symmetry)


def reverse_cycle_pairs(rng: jax.Array, n: int, style_dim: int) -> tuple[jax.Array, jax.Array]:
  """The reverse cycle's draws: each row's partner (a random permutation of the rows) and one
  style per pair from the prior N(0, I) [n, style_dim]."""
  partner_key, style_key = jax.random.split(rng)
  return jax.random.permutation(partner_key, n), jax.random.normal(style_key, (n, style_dim))


def reverse_cycle(inputs: TermInputs, objective_config: ml_collections.ConfigDict) -> jax.Array:
  """The reverse cycle of Jha et al. 2018: row i's content mean and its partner's (another
  group's) are decoded with one style drawn from the prior, both images re-encoded, and the
  squared distance between their learnt style means is charged (mean over valid pairs of
  different groups). A style encoder that reads the digit gives two digits drawn in one
  style two styles, so the term charges style for what content should carry; gradients reach
  the decoder and the encoder through both paths. Keys: rng folded with 5."""
  del objective_config
  posterior = inputs.posterior
  n, style_dim = posterior.style_mu.shape
  partner, style = reverse_cycle_pairs(jax.random.fold_in(inputs.rng, 5), n, style_dim)
  content = posterior.content_mu
  drawn = [models.mean_observation(inputs.decode(c, style)) for c in (content, content[partner])]
  fixed = warp.POSE_DIMS if inputs.pose_harmonics else 0
  style_a, style_b = (inputs.encode(x).style_mu[:, fixed:] for x in drawn)
  mask = inputs.batch["mask"]
  pairs = (mask & mask[partner] & (inputs.group_ids != inputs.group_ids[partner])).astype(style_a.dtype)
  distance = jnp.sum((style_a - style_b) ** 2, axis=-1)
  return jnp.sum(pairs * distance) / jnp.maximum(jnp.sum(pairs), 1.0)


TERMS: tuple[Term, ...] = (
    Term("style_hsic", "style_hsic_weight", style_hsic),
    Term("content_style_hsic", "content_style_hsic_weight", content_style_hsic),
    Term("content_contrast", "content_contrast_weight", content_contrast),
    Term("angle_equivariance", "angle_equivariance_weight", angle_equivariance),
    Term("reverse_cycle", "reverse_cycle_weight", reverse_cycle),
)
