"""The ML-VAE group ELBO over ragged groups, and its variants on the same code path (GVAE,
the iid VAE, and the adaptive Ada-GVAE / Ada-ML-VAE of adaptive.py).

    L(G) = sum_i E[log p(x_i | C_G, S_i)] - sum_i KL(q(S_i|x_i) || p(S)) - KL(q(C_G|X_G) || p(C))

averaged over the valid groups of a batch (docs/model.md, section 1). Per-observation terms are
vmapped, group sums go through `segment_sum`, so one compilation serves every group structure
with the same (N, G). This module is the paper's objective and nothing else: the terms the
loss adds to it live in terms.py, and the float64 reference (tests/reference.py) checks it.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from mlvae_jax import groups
from mlvae_jax.models import Likelihood, Posterior, log_likelihood
from mlvae_jax.objectives.adaptive import ADAPTIVE_VARIANTS, adaptive_content

CONTENT_SAMPLES = ("group", "member")

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


def variant_groups(group_ids: jax.Array, mask: jax.Array, num_groups: int,
                   variant: str) -> tuple[jax.Array, int]:
  """The groups `variant`'s ELBO pools over, as (ids, slots): the batch's, or for the VAE
  baseline every observation its own. The terms see the same groups as the ELBO."""
  if variant == "vae":
    return iid_groups(mask)
  return group_ids, num_groups


def content_posterior(
    posterior: Posterior, group_ids: jax.Array, num_groups: int, mask: jax.Array, variant: str
) -> tuple[jax.Array, jax.Array]:
  """q(C_G | X_G) per group slot: the exact product (ML-VAE, Ada-ML-VAE) or the average (GVAE,
  Ada-GVAE)."""
  combine = (groups.average_evidence if variant in ("gvae", "ada_gvae")
             else groups.accumulate_evidence)
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
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Loss (minus the beta-weighted mean group ELBO) and the reported terms.

  `kl_scale` multiplies both betas in the loss (KL warm-up); the reported ELBO ignores it.
  `noise.content` has one row per group slot when `content_sample == 'group'` (every member
  sees the same draw of C_G, as in the paper) and one row per observation otherwise. Reported
  terms are per group, averaged over valid groups; `elbo` is unweighted (betas = 1).
  """
  x, mask = batch["x"], batch["mask"]
  group_ids, num_groups = variant_groups(batch["group_ids"], mask, num_groups,
                                         objective_config.variant)
  group_mu, group_logvar = content_posterior(
      posterior, group_ids, num_groups, mask, objective_config.variant
  )
  if objective_config.single_member_rate:  # static: the paper's objective computes nothing extra
    if noise.member_score is None or noise.group_coin is None:
      raise ValueError("objective.single_member_rate > 0 needs noise.member_score and "
                       "noise.group_coin; draw the noise with sample_noise(..., single_member_rate)")
    one_mu, one_logvar = single_member_posterior(posterior, group_ids, num_groups, mask,
                                                 noise.member_score)
    use_one = (noise.group_coin < objective_config.single_member_rate)[:, None]
    group_mu = jnp.where(use_one, one_mu, group_mu)
    group_logvar = jnp.where(use_one, one_logvar, group_logvar)
  if objective_config.variant in ADAPTIVE_VARIANTS:  # the group's shared dimensions only
    pooled = adaptive_content(posterior.content_mu, posterior.content_logvar, group_mu,
                              group_logvar, group_ids, num_groups, mask)
    member_mu, member_logvar, kl_content = pooled.mu, pooled.logvar, pooled.kl
  else:
    member_mu = groups.gather_to_members(group_mu, group_ids)
    member_logvar = groups.gather_to_members(group_logvar, group_ids)
    kl_content = jax.vmap(gaussian_kl)(group_mu, group_logvar)
  member_std = jnp.exp(0.5 * member_logvar)
  if objective_config.content_sample == "group":
    content = member_mu + member_std * groups.gather_to_members(noise.content, group_ids)
  else:
    content = member_mu + member_std * noise.content
  style = posterior.style_mu + jnp.exp(0.5 * posterior.style_logvar) * noise.style

  log_px = jax.vmap(log_likelihood)(decode(content, style), x)
  kl_style = jax.vmap(gaussian_kl)(posterior.style_mu, posterior.style_logvar)

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
  }
  return loss, metrics
