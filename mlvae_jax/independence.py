"""A batch estimate of how much the style code depends on group membership (HSIC).

ML-VAE's ELBO lets the decoder read the group from style as well as from content: nothing in
the objective charges style for carrying it, and on MNIST a 5-NN probe reads the digit from
the style code. The Hilbert-Schmidt independence criterion (Gretton et al., ALT 2005) between
the style means and the group-membership kernel L_ij = [g_i = g_j] is zero iff style is
independent of the group (for a characteristic kernel such as the Gaussian), and sees
non-linear dependence that a linear decorrelation penalty misses; the HSIC-constrained VAE
(Lopez et al., NeurIPS 2018) uses the same estimator. Biased estimator over the m valid rows:

    HSIC = sum_ij (H K H)_ij L_ij / (m - 1)^2,   K_ij = exp(-|s_i - s_j|^2 / (2 sigma^2)),

with H the centring matrix and sigma^2 the median pairwise squared distance (median
heuristic, held constant in the gradient). Padding rows take no part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _masked_median(values: jax.Array, weights: jax.Array) -> jax.Array:
  """Median of the entries of `values` whose weight is 1 (a sort; fine for batch-sized inputs)."""
  flat = jnp.where(weights > 0, values, jnp.inf).ravel()
  count = jnp.sum(weights)
  ordered = jnp.sort(flat)
  return ordered[jnp.clip((count - 1) // 2, 0, flat.shape[0] - 1).astype(jnp.int32)]


def style_group_hsic(style: jax.Array, group_ids: jax.Array, mask: jax.Array) -> jax.Array:
  """HSIC between rows of `style` [N, D] and group membership, over rows where `mask`."""
  valid = mask.astype(style.dtype)
  pair = valid[:, None] * valid[None, :]
  m = jnp.maximum(jnp.sum(valid), 2.0)
  sq_norms = jnp.sum(style**2, axis=-1)
  sq_dist = jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * style @ style.T, 0.0)
  off_diagonal = pair * (1.0 - jnp.eye(style.shape[0], dtype=style.dtype))
  bandwidth = jax.lax.stop_gradient(jnp.maximum(_masked_median(sq_dist, off_diagonal), 1e-6))
  kernel = jnp.exp(-sq_dist / (2.0 * bandwidth)) * pair
  row_mean = jnp.sum(kernel, axis=1) / m
  total_mean = jnp.sum(kernel) / m**2
  centred = (kernel - row_mean[:, None] - row_mean[None, :] + total_mean) * pair
  same_group = (group_ids[:, None] == group_ids[None, :]).astype(style.dtype) * pair
  return jnp.sum(centred * same_group) / (m - 1.0) ** 2
