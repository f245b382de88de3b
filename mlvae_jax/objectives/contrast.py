"""A batch term that asks one image's content to recognise its group among the batch's.

The group ELBO rewards content only for what the decoder draws from it. On grouped_shapes the
decoder draws a round blob whatever the shape (docs/shapes/README.md), so nothing in the
objective asks the content encoder to tell shapes apart, and one image's content reads the
shape barely above chance. The group structure that ML-VAE already uses carries the missing
signal: members of a group share content and differ in style, so an encoder that places a
member's content nearer to its group-mates' than to other groups' must keep what the members
share and drop what varies between them. Contrastive learning on pairs that share content
identifies the content block (von Kuegelgen et al., NeurIPS 2021); with several positives per
anchor this is the supervised contrastive loss of Khosla et al. (NeurIPS 2020, their L_out),
here on the content means with similarity -|mu_i - mu_j|^2 / temperature:

    L = mean over anchors i of  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) ),

A(i) the other valid rows, P(i) those of i's group; an anchor needs at least one group-mate,
and the term is 0 when no row has one. Padding rows take no part. Another group in the batch
with the same label counts as a negative (groups are drawn, not labels), which only adds
noise to the term. It is not part of the ELBO: the loss adds it with its weight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlvae_jax.objectives.independence import pairwise_sq_distances

# Stands in for -inf in the softmax's denominator: a finite value keeps the gradient of a row
# with no other valid row at 0 rather than NaN.
_EXCLUDED = -1e30


def content_group_contrast(content_mu: jax.Array, group_ids: jax.Array, mask: jax.Array,
                           temperature: float = 1.0) -> jax.Array:
  """The mean supervised contrastive loss of `content_mu` [N, D] rows against group membership."""
  n = content_mu.shape[0]
  sq_dist = pairwise_sq_distances(content_mu)
  others = mask[:, None] & mask[None, :] & ~jnp.eye(n, dtype=bool)
  positives = others & (group_ids[:, None] == group_ids[None, :])
  logits = jnp.where(others, -sq_dist / temperature, _EXCLUDED)
  log_prob = logits - jax.nn.logsumexp(logits, axis=1, keepdims=True)
  num_positives = jnp.sum(positives, axis=1)
  per_anchor = -jnp.sum(jnp.where(positives, log_prob, 0.0), axis=1) / jnp.maximum(num_positives, 1)
  is_anchor = num_positives > 0
  return jnp.sum(jnp.where(is_anchor, per_anchor, 0.0)) / jnp.maximum(jnp.sum(is_anchor), 1)
