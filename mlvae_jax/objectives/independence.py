"""A batch estimate of how much the style code depends on group membership (HSIC).

ML-VAE's ELBO lets the decoder read the group from style as well as from content: nothing in
the objective charges style for carrying it, and on MNIST a 5-NN probe reads the digit from
the style code. The Hilbert-Schmidt independence criterion (Gretton et al., ALT 2005) between
the style means and the group-membership kernel L_ij = [g_i = g_j] is zero iff style is
independent of the group (for a characteristic kernel such as the Gaussian), and sees
non-linear dependence that a linear decorrelation penalty misses; the HSIC-constrained VAE
(Lopez et al., NeurIPS 2018) penalises the same quantity.

The estimator is the unbiased one (Song et al., JMLR 2012), over the m valid rows:

    HSIC_u = [tr(K~ L~) + (1'K~1)(1'L~1) / ((m-1)(m-2)) - 2/(m-2) 1'K~L~1] / (m(m-3)),

with K~, L~ the kernel matrices with zeroed diagonals, K the mean of Gaussian kernels
exp(-|z_i - z_j|^2 / (2 a sigma^2)) for a in BANDWIDTH_SCALES, on the style means z
standardised per dimension over the batch, and sigma^2 the mean pairwise squared distance
(held constant in the gradient, like the standardising scales). On standardised codes the
usual median heuristic lands within a few percent of the mean, and its sort over m^2 entries
cost 35x the rest of the term on CPU.

Standardising makes the term blind to per-dimension scale, as the probes are (they
standardise too), so the group cannot hide in a narrow dimension; at weight 1e4 on MNIST it
changed the style 5-NN probe little (0.67 against 0.68 without).

Unbiased matters for a penalty: the biased estimator's O(1/m) floor shrinks as the
kernel matrix becomes constant, so minimising it rewards collapsing the style code altogether
(seen on MNIST: style KL fell from 130 to 13 nats), while the unbiased one has expectation 0
for every independent code. Padding rows take no part.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlvae_jax import groups


# Multiples of the base bandwidth: a k-NN probe reads local structure that one wide kernel
# smooths over (on MNIST these three lowered the style 5-NN probe from 0.56 to 0.50 at the
# same weight; docs/mnist/study.md).
BANDWIDTH_SCALES = (1.0 / 16.0, 1.0 / 4.0, 1.0)


def pairwise_sq_distances(z: jax.Array) -> jax.Array:
  """|z_i - z_j|^2 for every pair of rows of `z` [N, D], by one matrix product (clipped at 0)."""
  sq_norms = jnp.sum(z**2, axis=-1)
  return jnp.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * z @ z.T, 0.0)


def _code_kernel(code: jax.Array, valid: jax.Array, off_diagonal: jax.Array, m: jax.Array,
                 bandwidth_scales: tuple[float, ...]) -> jax.Array:
  """The mean of Gaussian kernels on `code` standardised over the valid rows (scales and the
  base bandwidth held constant in the gradient), diagonal and padding pairs zeroed."""
  mean = jnp.sum(code * valid[:, None], axis=0) / m
  std = jnp.sqrt(jnp.sum((code - mean) ** 2 * valid[:, None], axis=0) / m)
  code = (code - mean) / jax.lax.stop_gradient(jnp.maximum(std, 1e-6))
  sq_dist = pairwise_sq_distances(code)
  mean_sq_dist = jnp.sum(sq_dist * off_diagonal) / jnp.maximum(jnp.sum(off_diagonal), 1.0)
  bandwidth = jax.lax.stop_gradient(jnp.maximum(mean_sq_dist, 1e-6))
  kernel = sum(jnp.exp(-sq_dist / (2.0 * scale * bandwidth)) for scale in bandwidth_scales)
  return kernel * off_diagonal / len(bandwidth_scales)


def _unbiased_hsic(kernel: jax.Array, other: jax.Array, m: jax.Array) -> jax.Array:
  """Song et al.'s estimator from two kernel matrices with zeroed diagonals and padding."""
  trace_term = jnp.sum(kernel * other)
  sums_term = jnp.sum(kernel) * jnp.sum(other) / ((m - 1.0) * (m - 2.0))
  cross_term = 2.0 / (m - 2.0) * jnp.sum(jnp.sum(kernel, axis=0) * jnp.sum(other, axis=1))
  return (trace_term + sums_term - cross_term) / (m * (m - 3.0))


def _valid_rows(mask: jax.Array, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(valid [N], off-diagonal valid pairs [N, N], m = max(number valid, 4))."""
  valid = mask.astype(dtype)
  off_diagonal = valid[:, None] * valid[None, :] * (1.0 - jnp.eye(mask.shape[0], dtype=dtype))
  return valid, off_diagonal, jnp.maximum(jnp.sum(valid), 4.0)


def style_group_hsic(style: jax.Array, group_ids: jax.Array, mask: jax.Array,
                     bandwidth_scales: tuple[float, ...] = BANDWIDTH_SCALES,
                     group_content: jax.Array | None = None) -> jax.Array:
  """Unbiased HSIC between rows of `style` [N, D] and the group, over rows where `mask`.

  The group's kernel is membership, [g_i = g_j], unless `group_content` [N, Dc] (each member's
  group content code) is given: then it is `_code_kernel` of that code, held constant in the
  gradient. Membership counts two groups of one shape as unrelated, so a style code that names
  the shape (shared by a third of the groups of a grouped_shapes batch) agrees with it only in
  the few same-group pairs; the content kernel rates such pairs as alike, and the content code
  only ever answers through its own terms."""
  valid, off_diagonal, m = _valid_rows(mask, style.dtype)
  kernel = _code_kernel(style, valid, off_diagonal, m, bandwidth_scales)
  if group_content is None:
    group_kernel = (group_ids[:, None] == group_ids[None, :]).astype(style.dtype) * off_diagonal
  else:
    group_kernel = _code_kernel(jax.lax.stop_gradient(group_content), valid, off_diagonal, m,
                                bandwidth_scales)
  return _unbiased_hsic(kernel, group_kernel, m)


def within_group_content_style_hsic(
    content: jax.Array, style: jax.Array, group_ids: jax.Array, mask: jax.Array,
    num_groups: int, bandwidth_scales: tuple[float, ...] = BANDWIDTH_SCALES,
    pose: jax.Array | None = None) -> jax.Array:
  """Unbiased HSIC between content's within-group part (each member's content mean minus its
  group's average, [N, Dc]) and style [N, Ds], over rows where `mask`.

  Content should be the same for every member of a group, so what varies within a group is
  free to vary only if it says nothing about style: content and style independent given the
  group. Why not HSIC(content, style) itself: its kernel's bandwidth follows the spread
  between groups, and a style factor copied into content in offsets far smaller than that
  (grouped_shapes' brightness, read at 0.9 by a 5-NN probe) scores nothing; standardised
  residuals put the bandwidth at the within-group spread. A group of one has residual 0, and
  so has any difference at the level of float rounding.

  `pose` [N, P] (features of a pose held outside the learnt style, e.g. the moment pose's)
  adds HSIC(residual, pose) with its own kernel: the sum of the two kernels, so neither
  part's distances drown the other's."""
  valid, off_diagonal, m = _valid_rows(mask, content.dtype)
  sizes = groups.segment_sum(valid, group_ids, num_groups)
  sums = groups.segment_sum(content * valid[:, None], group_ids, num_groups)
  member_means = groups.gather_to_members(sums / jnp.maximum(sizes, 1.0)[:, None], group_ids)
  residual = content - member_means
  # What rounding leaves of a group-constant content is no variation: the standardisation
  # would blow it up into a random code, and a small batch's estimate of that is far from 0.
  rounding = 8 * jnp.finfo(content.dtype).eps * (jnp.abs(content) + jnp.abs(member_means))
  residual = jnp.where(jnp.abs(residual) <= rounding, 0.0, residual) * valid[:, None]
  style_kernel = _code_kernel(style, valid, off_diagonal, m, bandwidth_scales)
  if pose is not None:
    style_kernel = style_kernel + _code_kernel(pose, valid, off_diagonal, m, bandwidth_scales)
  return _unbiased_hsic(_code_kernel(residual, valid, off_diagonal, m, bandwidth_scales),
                        style_kernel, m)
