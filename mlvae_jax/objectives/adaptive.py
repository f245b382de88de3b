"""Adaptive content pooling: Ada-GVAE and Ada-ML-VAE (Locatello et al., ICML 2020,
"Weakly-Supervised Disentanglement Without Compromises"), on the group ELBO's code path.

Why: GVAE and ML-VAE pool every content dimension over the group, so the content size must
match the number of factors the members share. The adaptive variants find, per group, which
dimensions the members share, from how far apart their posteriors are in each dimension,
and pool only those; the others stay each member's own.

Here the adaptive selection runs over the content code; the style code stays per member as
in every variant (with a small `model.style_dim` this is the paper's single-code model). Per
group G and content dimension j:

    delta_Gj = max over member pairs (i, i') of (KL(q_ij || q_i'j) + KL(q_i'j || q_ij)) / 2
    tau_G    = (max_j delta_Gj + min_j delta_Gj) / 2
    shared   = delta_Gj < tau_G, or every delta_Gj equal (a group of one: nothing to tell)

For a pair, delta is the symmetrised per-dimension KL between the two posteriors (the paper
takes KL(q_1 || q_2), whose value depends on which member is first) and tau the paper's
threshold; for larger groups a dimension is shared only when no two members disagree in it
more than half-way between the group's most and least divergent dimensions. The selection is
a hard mask (no gradient), as in the paper.

Shared dimensions take the group aggregate: the average of the members' Normals (ada_gvae)
or their product (ada_mlvae, the exact product of objective.variant='mlvae'; the paper's
ML-VAE averages precisions instead). The objective is the group ELBO unchanged: a shared
dimension's KL is counted once per group (like every variant's content), a kept dimension's
once per member (like style). Content draws follow objective.content_sample: 'group' gives
every member of a group the same standard-normal draw in every dimension (each member's term
keeps its expectation), 'member' each its own.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mlvae_jax import groups

ADAPTIVE_VARIANTS = ("ada_gvae", "ada_mlvae")


class AdaptiveContent(NamedTuple):
  """Each member's content posterior after adaptive pooling, and the group content KLs."""

  mu: jax.Array  # [N, D]: the group aggregate in shared dimensions, the member's own elsewhere
  logvar: jax.Array  # [N, D]
  shared: jax.Array  # [N, D] bool: whether the member's group shares the dimension
  kl: jax.Array  # [G] KL of the shared aggregate plus the members' kept dimensions


def symmetric_kl(mu_a: jax.Array, logvar_a: jax.Array, mu_b: jax.Array, logvar_b: jax.Array
                 ) -> jax.Array:
  """(KL(a || b) + KL(b || a)) / 2 per dimension of diagonal Normals (broadcasting)."""
  gap = (mu_a - mu_b) ** 2
  return 0.25 * ((jnp.exp(logvar_a) + gap) * jnp.exp(-logvar_b)
                 + (jnp.exp(logvar_b) + gap) * jnp.exp(-logvar_a) - 2.0)


def group_divergence(mu: jax.Array, logvar: jax.Array, group_ids: jax.Array, num_groups: int,
                     mask: jax.Array) -> jax.Array:
  """[G, D] largest symmetrised KL between two valid members of each group, per dimension
  (0 for a group of one and for empty slots)."""
  n = group_ids.shape[0]
  # Other members only: a member's KL to itself is 0 up to rounding, which would decide the
  # threshold of a group of one.
  same = ((group_ids[:, None] == group_ids[None, :]) & mask[:, None] & mask[None, :]
          & ~jnp.eye(n, dtype=bool))
  pairwise = symmetric_kl(mu[:, None], logvar[:, None], mu[None], logvar[None])  # [N, N, D]
  per_member = jnp.max(jnp.where(same[..., None], pairwise, 0.0), axis=1)
  per_member = jnp.where(mask[:, None], per_member, 0.0)
  return jnp.maximum(jax.ops.segment_max(per_member, group_ids, num_segments=num_groups), 0.0)


def shared_dimensions(divergence: jax.Array) -> jax.Array:
  """[G, D] bool: dimensions below the midpoint of each group's divergence range (all of them
  when the range is empty)."""
  divergence = jax.lax.stop_gradient(divergence)
  high, low = jnp.max(divergence, axis=1, keepdims=True), jnp.min(divergence, axis=1, keepdims=True)
  return (divergence < 0.5 * (high + low)) | (high == low)


def adaptive_content(mu: jax.Array, logvar: jax.Array, group_mu: jax.Array,
                     group_logvar: jax.Array, group_ids: jax.Array, num_groups: int,
                     mask: jax.Array) -> AdaptiveContent:
  """Members' content posteriors [N, D] with the shared dimensions of their group replaced by
  the aggregate (`group_mu`, `group_logvar` [G, D]), and each group's content KL."""
  shared = shared_dimensions(group_divergence(mu, logvar, group_ids, num_groups, mask))
  member_shared = groups.gather_to_members(shared, group_ids) & mask[:, None]
  member_mu = jnp.where(member_shared, groups.gather_to_members(group_mu, group_ids), mu)
  member_logvar = jnp.where(member_shared, groups.gather_to_members(group_logvar, group_ids),
                            logvar)
  kl_dims = lambda m, lv: 0.5 * (jnp.exp(lv) + m**2 - 1.0 - lv)
  shared_kl = jnp.sum(jnp.where(shared, kl_dims(group_mu, group_logvar), 0.0), axis=1)
  kept = mask[:, None] & ~member_shared
  kept_kl = jnp.sum(jnp.where(kept, kl_dims(mu, logvar), 0.0), axis=1)
  kl = shared_kl + groups.segment_sum(kept_kl, group_ids, num_groups)
  return AdaptiveContent(member_mu, member_logvar, member_shared, kl)
