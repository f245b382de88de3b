"""The ML-VAE group ELBO over ragged groups, and its variants on the same code path.

    L(G) = sum_i E[log p(x_i | C_G, S_i)] - sum_i KL(q(S_i|x_i) || p(S)) - KL(q(C_G|X_G) || p(C))

averaged over the valid groups of a batch (docs/model.md, section 1). Per-observation terms are
vmapped, group sums go through `segment_sum`, so one compilation serves every group structure
with the same (N, G).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax.pose import canonical, equivariance, warp
from mlvae_jax.objectives import contrast, independence
from mlvae_jax import groups
from mlvae_jax.configs import VARIANTS, check_choice
from mlvae_jax.models import MLVAE, Likelihood, Posterior, log_likelihood

CONTENT_SAMPLES = ("group", "member")
STYLE_HSIC_GROUP_KERNELS = ("membership", "content")

DecodeFn = Callable[[jax.Array, jax.Array], Likelihood]
Batch = dict[str, jax.Array]


class Noise(NamedTuple):
  """Standard-normal draws for the reparameterisation; explicit so tests can share them."""

  content: jax.Array  # [G, Dc] (one draw per group) or [N, Dc] (one per member)
  style: jax.Array  # [N, Ds]
  # Uniform draws for objective.single_member_rate (None when it is 0): a score per member
  # (the group's highest scorer is its chosen member) and a coin per group slot.
  member_score: jax.Array | None = None  # [N]
  group_coin: jax.Array | None = None  # [G]


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)) of one diagonal Normal, summed over dimensions."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mu**2 - 1.0 - logvar)


def iid_groups(mask: jax.Array) -> tuple[jax.Array, int]:
  """Every valid observation its own group (the VAE baseline): ids 0..N-1, padding id N."""
  n = mask.shape[0]
  return jnp.where(mask, jnp.arange(n, dtype=jnp.int32), n), n


def content_posterior(
    posterior: Posterior, group_ids: jax.Array, num_groups: int, mask: jax.Array, variant: str
) -> tuple[jax.Array, jax.Array]:
  """q(C_G | X_G) per group slot: the exact product (ML-VAE) or the average (GVAE)."""
  combine = groups.average_evidence if variant == "gvae" else groups.accumulate_evidence
  return combine(posterior.content_mu, posterior.content_logvar, group_ids, num_groups, mask)


def single_member_posterior(
    posterior: Posterior, group_ids: jax.Array, num_groups: int, mask: jax.Array,
    member_score: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """q(C | x_j) of one member j per group slot: the valid member with the highest score (the
  lowest row on a tie). Slots without a valid member hold the prior (mu 0, logvar 0)."""
  n = mask.shape[0]
  masked_score = jnp.where(mask, member_score, -jnp.inf)
  best = jax.ops.segment_max(masked_score, group_ids, num_segments=num_groups)
  is_best = mask & (masked_score == groups.gather_to_members(best, group_ids))
  rows = jnp.arange(n, dtype=jnp.int32)
  chosen = jax.ops.segment_min(jnp.where(is_best, rows, n), group_ids, num_segments=num_groups)
  has_members = (chosen < n)[:, None]
  chosen = jnp.clip(chosen, 0, n - 1)
  return (jnp.where(has_members, posterior.content_mu[chosen], 0.0),
          jnp.where(has_members, posterior.content_logvar[chosen], 0.0))


def sample_noise(
    rng: jax.Array, num_observations: int, num_groups: int, content_dim: int, style_dim: int,
    content_sample: str, single_member_rate: float = 0.0,
) -> Noise:
  """Draws the reparameterisation noise for one batch (and the member choices when
  `single_member_rate` > 0, from a key folded off `rng` so the other draws stay as they are)."""
  content_rng, style_rng = jax.random.split(rng)
  content_rows = num_groups if content_sample == "group" else num_observations
  member_score = group_coin = None
  if single_member_rate:
    score_rng, coin_rng = jax.random.split(jax.random.fold_in(rng, 1))
    member_score = jax.random.uniform(score_rng, (num_observations,))
    group_coin = jax.random.uniform(coin_rng, (num_groups,))
  return Noise(
      content=jax.random.normal(content_rng, (content_rows, content_dim)),
      style=jax.random.normal(style_rng, (num_observations, style_dim)),
      member_score=member_score,
      group_coin=group_coin,
  )


def group_elbo(
    posterior: Posterior,
    decode: DecodeFn,
    batch: Batch,
    noise: Noise,
    num_groups: int,
    objective_config: ml_collections.ConfigDict,
    kl_scale: jax.Array | float = 1.0,
    pose_harmonics: tuple[int, ...] = (),
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Loss (minus the beta-weighted mean group ELBO) and the reported terms.

  `kl_scale` multiplies both betas in the loss (KL warm-up); the reported ELBO ignores it.
  `pose_harmonics` (the moment pose's harmonic orders, `model.pose_from='moments'`; empty for
  none): the first `warp.POSE_DIMS` style means are then fixed functions of x, left out of
  both HSIC terms: no parameter moves them, and in the HSIC's kernel they only add distance
  that drowns the learnt dimensions' dependence. With `content_style_hsic_pose` the
  content-style term also takes that pose through its own kernel on
  `canonical.pose_features`: content can move, and a content code that follows the pose
  within a group is what the term is for.

  `noise.content` has one row per group slot when `content_sample == 'group'` (every member
  sees the same draw of C_G, as in the paper) and one row per observation otherwise. Reported
  terms are per group, averaged over valid groups; `elbo` is unweighted (betas = 1).
  """
  x, mask = batch["x"], batch["mask"]
  group_ids = batch["group_ids"]
  fixed_style_dims = warp.POSE_DIMS if pose_harmonics else 0
  if objective_config.variant == "vae":
    group_ids, num_groups = iid_groups(mask)
  group_mu, group_logvar = content_posterior(
      posterior, group_ids, num_groups, mask, objective_config.variant
  )
  product_mu = group_mu
  if objective_config.single_member_rate:  # static: the paper's objective computes nothing extra
    if noise.member_score is None or noise.group_coin is None:
      raise ValueError("objective.single_member_rate > 0 needs noise.member_score and "
                       "noise.group_coin; draw the noise with sample_noise(..., single_member_rate)")
    one_mu, one_logvar = single_member_posterior(posterior, group_ids, num_groups, mask,
                                                 noise.member_score)
    use_one = (noise.group_coin < objective_config.single_member_rate)[:, None]
    group_mu = jnp.where(use_one, one_mu, group_mu)
    group_logvar = jnp.where(use_one, one_logvar, group_logvar)
  member_mu = groups.gather_to_members(group_mu, group_ids)
  member_std = jnp.exp(0.5 * groups.gather_to_members(group_logvar, group_ids))
  if objective_config.content_sample == "group":
    content = member_mu + member_std * groups.gather_to_members(noise.content, group_ids)
  else:
    content = member_mu + member_std * noise.content
  style = posterior.style_mu + jnp.exp(0.5 * posterior.style_logvar) * noise.style

  log_px = jax.vmap(log_likelihood)(decode(content, style), x)
  kl_style = jax.vmap(gaussian_kl)(posterior.style_mu, posterior.style_logvar)
  kl_content = jax.vmap(gaussian_kl)(group_mu, group_logvar)

  valid_group = groups.valid_groups(group_ids, num_groups, mask)
  num_valid = jnp.maximum(jnp.sum(valid_group), 1).astype(log_px.dtype)

  def per_group_mean(member_values: jax.Array) -> jax.Array:
    return jnp.sum(groups.segment_sum(jnp.where(mask, member_values, 0.0), group_ids, num_groups)) / num_valid

  reconstruction = per_group_mean(log_px)
  style_kl = per_group_mean(kl_style)
  content_kl = jnp.sum(jnp.where(valid_group, kl_content, 0.0)) / num_valid
  elbo = reconstruction - style_kl - content_kl
  loss = -(
      reconstruction
      - kl_scale * objective_config.beta_style * style_kl
      - kl_scale * objective_config.beta_content * content_kl
  )
  extra = {}
  if objective_config.style_hsic_weight:  # a static switch: the paper's objective pays nothing
    group_content = (groups.gather_to_members(product_mu, group_ids)
                     if objective_config.style_hsic_group_kernel == "content" else None)
    extra["style_hsic"] = independence.style_group_hsic(
        posterior.style_mu[:, fixed_style_dims:], group_ids, mask, group_content=group_content)
    loss = loss + objective_config.style_hsic_weight * extra["style_hsic"]
  if objective_config.content_style_hsic_weight:  # static, like the style-group HSIC
    pose = (canonical.pose_features(posterior.style_mu[:, :fixed_style_dims], pose_harmonics)
            if objective_config.content_style_hsic_pose else None)
    extra["content_style_hsic"] = independence.within_group_content_style_hsic(
        posterior.content_mu, posterior.style_mu[:, fixed_style_dims:], group_ids, mask,
        num_groups, pose=pose)
    loss = loss + objective_config.content_style_hsic_weight * extra["content_style_hsic"]
  if objective_config.content_contrast_weight:  # static, like the HSIC
    extra["content_contrast"] = contrast.content_group_contrast(
        posterior.content_mu, group_ids, mask, objective_config.content_contrast_temperature)
    loss = loss + objective_config.content_contrast_weight * extra["content_contrast"]
  num_observations = jnp.maximum(jnp.sum(mask), 1)
  dims_per_group = num_observations / num_valid * math.prod(x.shape[1:])
  metrics = {
      "loss": loss,
      "elbo": elbo,
      "reconstruction": reconstruction,
      "kl_style": style_kl,
      "kl_content": content_kl,
      "bits_per_dim": -elbo / (dims_per_group * math.log(2.0)),
      "num_groups": jnp.sum(valid_group),
      **extra,
  }
  return loss, metrics


def check_objective_config(objective_config: ml_collections.ConfigDict) -> None:
  """Rejects unknown variants early, with the valid choices."""
  check_choice("objective.variant", objective_config.variant, VARIANTS)
  check_choice("objective.content_sample", objective_config.content_sample, CONTENT_SAMPLES)
  check_choice("objective.style_hsic_group_kernel", objective_config.style_hsic_group_kernel,
               STYLE_HSIC_GROUP_KERNELS)
  rate = objective_config.single_member_rate
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f"objective.single_member_rate is {rate}; it is a probability: set it "
                     "in [0, 1] (0 is the paper's objective)")
  for name in ("style_hsic_weight", "content_style_hsic_weight"):
    if objective_config[name] < 0:
      raise ValueError(f"objective.{name} is {objective_config[name]}; it weighs a penalty: "
                       "set it >= 0 (0 is the paper's objective)")
  if objective_config.content_contrast_weight < 0 or objective_config.content_contrast_temperature <= 0:
    raise ValueError(
        f"objective.content_contrast_weight is {objective_config.content_contrast_weight} and "
        f"objective.content_contrast_temperature {objective_config.content_contrast_temperature}; "
        "set the weight >= 0 (0 is the paper's objective) and the temperature > 0")
  symmetry = objective_config.angle_equivariance_symmetry
  max_turn = objective_config.angle_equivariance_max_turn
  if (objective_config.angle_equivariance_weight < 0 or not isinstance(symmetry, int)
      or symmetry < 1 or not 0.0 < max_turn <= math.pi / max(symmetry, 1)):
    raise ValueError(
        f"objective.angle_equivariance_weight is {objective_config.angle_equivariance_weight}, "
        f"angle_equivariance_symmetry {symmetry!r} and angle_equivariance_max_turn {max_turn}; "
        "set the weight >= 0 (0 is the paper's objective), the symmetry to an integer >= 1 (the "
        "data's largest rotational symmetry order, 1 for none) and the max turn in "
        "(0, pi / symmetry] radians, so a turn is never mistaken for a symmetry")
  masking = objective_config.input_masking
  if not 0.0 <= masking < 1.0:
    raise ValueError(f"objective.input_masking is {masking}; it is the fraction of input values "
                     "zeroed: set it in [0, 1) (0 is the paper's objective)")


def mask_inputs(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """`x` with each value zeroed with probability `rate` (masking noise, Vincent et al. 2008),
  unscaled: a zeroed pixel reads as background, as in the denoising VAE of Im et al. 2017."""
  return jnp.where(jax.random.bernoulli(rng, 1.0 - rate, x.shape), x, jnp.zeros_like(x))


def kl_warmup_scale(step: jax.Array | None, warmup_steps: int) -> jax.Array | float:
  """Linear KL warm-up (Bowman et al. 2016; Sonderby et al. 2016): 0 at step 0, 1 from
  `warmup_steps` on; 1 when there is no step (evaluation) or no warm-up."""
  if step is None or not warmup_steps:
    return 1.0
  return jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def angle_equivariance_term(
    model: MLVAE, variables: dict, x: jax.Array, posterior: Posterior, mask: jax.Array,
    rng: jax.Array, objective_config: ml_collections.ConfigDict,
) -> jax.Array:
  """`equivariance.angle_equivariance` of the encoder on `x` and on `x` turned about its
  centroids by turns drawn uniformly in [-max_turn, max_turn]; `posterior` is q(. | x)."""
  n = x.shape[0]
  max_turn = objective_config.angle_equivariance_max_turn
  turn = jax.random.uniform(rng, (n,), x.dtype, -max_turn, max_turn)
  turned = model.apply(variables, equivariance.turn_about_centroids(x, turn), method="encode")
  angle, angle_var = warp.dedicated_angle_posterior(posterior.style_mu, posterior.style_logvar)
  turned_angle, turned_var = warp.dedicated_angle_posterior(turned.style_mu, turned.style_logvar)
  return equivariance.angle_equivariance(angle, angle_var, turned_angle, turned_var, turn, mask,
                                         objective_config.angle_equivariance_symmetry)


def make_loss_fn(
    model: MLVAE, config: ml_collections.ConfigDict
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """`loss_fn(params, batch, rng, step=None) -> (loss, metrics)` for the configured model and
  objective; `step` drives the KL warm-up. Without a step (evaluation) q(C_G | X_G) is always
  the product and the encoder sees clean inputs: `single_member_rate` and `input_masking` shape
  training only, held-out ELBOs stay the paper's."""
  check_objective_config(config.objective)
  if config.objective.angle_equivariance_weight and config.model.decoder_warp != "rigid_dedicated":
    raise ValueError(
        "objective.angle_equivariance_weight > 0 trains the angle of "
        f"model.decoder_warp='rigid_dedicated', but the warp is {config.model.decoder_warp!r}; "
        "set --config.model.decoder_warp=rigid_dedicated or the weight to 0")
  training_config = config.objective
  evaluation_config = ml_collections.ConfigDict(training_config.to_dict())
  evaluation_config.single_member_rate = 0.0
  evaluation_config.input_masking = 0.0
  num_groups = config.data.num_groups
  content_dim, style_dim = config.model.content_dim, config.model.style_dim
  if config.objective.content_style_hsic_pose and model.canonical_harmonics is None:
    raise ValueError(
        "objective.content_style_hsic_pose=True gives the content-style HSIC the moment pose, "
        f"but model.pose_from is {config.model.pose_from!r}: with a learned pose the pose "
        "dimensions are already among the style it takes; set --config.model.pose_from=moments "
        "(with decoder_warp='rigid_dedicated') or content_style_hsic_pose=False")

  def loss_fn(
      params: dict, batch: Batch, rng: jax.Array, step: jax.Array | None = None
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`step` (training only) sets the KL warm-up; without it the betas apply in full."""
    objective_config = evaluation_config if step is None else training_config
    variables = {"params": params}
    encoder_input = batch["x"]
    if objective_config.input_masking:  # static: the paper's objective draws nothing extra
      encoder_input = mask_inputs(encoder_input, objective_config.input_masking,
                                  jax.random.fold_in(rng, 2))
    posterior = model.apply(variables, encoder_input, method="encode")
    n = batch["x"].shape[0]
    slots = n if objective_config.variant == "vae" else num_groups
    noise = sample_noise(rng, n, slots, content_dim, style_dim, objective_config.content_sample,
                         objective_config.single_member_rate)

    def decode(content: jax.Array, style: jax.Array) -> Likelihood:
      return model.apply(variables, content, style, method="decode")

    loss, metrics = group_elbo(posterior, decode, batch, noise, num_groups, objective_config,
                               kl_warmup_scale(step, objective_config.kl_warmup_steps),
                               model.canonical_harmonics or ())
    if objective_config.angle_equivariance_weight:  # static, like the HSIC
      term = angle_equivariance_term(model, variables, encoder_input, posterior, batch["mask"],
                                     jax.random.fold_in(rng, 3), objective_config)
      loss = loss + objective_config.angle_equivariance_weight * term
      metrics = {**metrics, "loss": loss, "angle_equivariance": term}
    return loss, metrics

  return loss_fn
