"""Segment operations over ragged groups with static shapes.

A batch holds N observations in at most G group slots (docs/model.md, section 2). Each host's
batch has sorted ids and padding rows with id G, dropped by `jax.ops.segment_sum`, so every
function here compiles once per (N, G) whatever the group sizes are. A multi-host global batch
is the hosts' batches end to end, so a host's padding (id G) may precede the next host's ids:
the segment ops therefore never assume globally sorted ids.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def segment_sum(values: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
  """Sums rows of `values` per group; ids outside [0, num_groups) are dropped."""
  return jax.ops.segment_sum(values, group_ids, num_segments=num_groups)


def group_sizes(group_ids: jax.Array, num_groups: int, mask: jax.Array) -> jax.Array:
  """Number of valid members of each group slot, shape [G]."""
  return segment_sum(mask.astype(jnp.int32), group_ids, num_groups)


def valid_groups(group_ids: jax.Array, num_groups: int, mask: jax.Array) -> jax.Array:
  """[G] bool: True for slots that hold at least one valid member."""
  return group_sizes(group_ids, num_groups, mask) > 0


def gather_to_members(group_values: jax.Array, group_ids: jax.Array) -> jax.Array:
  """Sends per-group rows back to their members; padding ids are clipped (and masked later)."""
  num_groups = group_values.shape[0]
  return jnp.take(group_values, jnp.clip(group_ids, 0, num_groups - 1), axis=0)


def _masked_segment_logsumexp(
    values: jax.Array, group_ids: jax.Array, num_groups: int, mask: jax.Array
) -> jax.Array:
  """log(sum_i exp(values_i)) over valid rows per group, stable for any magnitude.

  Empty groups give 0 (callers mask them); no inf or NaN reaches values or gradients.
  """
  neg_inf = jnp.asarray(-jnp.inf, values.dtype)
  row_mask = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
  masked = jnp.where(row_mask, values, neg_inf)
  group_max = jax.ops.segment_max(masked, group_ids, num_segments=num_groups)
  # Empty groups have max -inf; shift by 0 there so no inf - inf appears.
  safe_max = jnp.where(jnp.isfinite(group_max), group_max, 0.0)
  shifted = jnp.exp(masked - gather_to_members(jax.lax.stop_gradient(safe_max), group_ids))
  total = segment_sum(jnp.where(row_mask, shifted, 0.0), group_ids, num_groups)
  return jnp.log(jnp.where(total > 0, total, 1.0)) + jax.lax.stop_gradient(safe_max)


def accumulate_evidence(
    mu: jax.Array,
    logvar: jax.Array,
    group_ids: jax.Array,
    num_groups: int,
    mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Product of the members' diagonal Normals for each group (ML-VAE evidence accumulation).

  Precisions add, so the group posterior sharpens as evidence accumulates:
  `logvar_G = -logsumexp_i(-logvar_i)` and `mu_G = sum_i mu_i * exp(logvar_G - logvar_i)`.
  Both are computed in log space, stable for log-variances in [-30, 30] and beyond, and
  differentiable with respect to every valid member's `mu` and `logvar`.

  Args:
    mu, logvar: [N, D] member posteriors.
    group_ids: [N] int, sorted; padding rows may carry any id (they are masked).
    num_groups: G, the static number of group slots.
    mask: [N] bool, False for padding rows.

  Returns:
    (group_mu, group_logvar), each [G, D]. Slots without a valid member hold mu 0 and
    logvar 0 (the prior), so downstream code never sees NaN or inf.
  """
  has_members = valid_groups(group_ids, num_groups, mask)[:, None]
  neg_log_precision = _masked_segment_logsumexp(-logvar, group_ids, num_groups, mask)
  group_logvar = jnp.where(has_members, -neg_log_precision, 0.0)
  # Member weights exp(logvar_G - logvar_i) are each member's share of the precision: in
  # [0, 1] and summing to 1, so the weighted mean never overflows.
  log_weights = gather_to_members(group_logvar, group_ids) - logvar
  weights = jnp.exp(jnp.where(mask[:, None], log_weights, -jnp.inf))
  group_mu = segment_sum(weights * mu, group_ids, num_groups)
  return jnp.where(has_members, group_mu, 0.0), group_logvar


def average_evidence(
    mu: jax.Array,
    logvar: jax.Array,
    group_ids: jax.Array,
    num_groups: int,
    mask: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """GVAE's group posterior (Hosoya 2019): the arithmetic mean of member means and variances."""
  sizes = group_sizes(group_ids, num_groups, mask)
  has_members = (sizes > 0)[:, None]
  denom = jnp.maximum(sizes, 1).astype(mu.dtype)[:, None]
  row_mask = mask[:, None]
  group_mu = segment_sum(jnp.where(row_mask, mu, 0.0), group_ids, num_groups) / denom
  log_mean_var = _masked_segment_logsumexp(logvar, group_ids, num_groups, mask) - jnp.log(denom)
  return (
      jnp.where(has_members, group_mu, 0.0),
      jnp.where(has_members, log_mean_var, 0.0),
  )


class BatchError(ValueError):
  """A batch that breaks the batch contract of docs/model.md, section 2."""


def _rows(indices: np.ndarray, limit: int = 8) -> str:
  shown = ", ".join(str(int(i)) for i in indices[:limit])
  more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
  return f"rows [{shown}]{more}"


def validate_batch(batch: Mapping[str, Any], num_groups: int) -> None:
  """Checks a host batch against the batch contract; raises BatchError naming the bad rows.

  Runs outside jit (numpy), in the data pipeline and in debug mode: `segment_sum` silently
  drops out-of-range ids, so a malformed batch would otherwise train on wrong groups.
  """
  for key in ("x", "group_ids", "mask"):
    if key not in batch:
      raise BatchError(
          f"batch has no '{key}' entry (keys: {sorted(batch)}); a batch needs x, group_ids, mask"
      )
  x = np.asarray(batch["x"])
  group_ids = np.asarray(batch["group_ids"])
  mask = np.asarray(batch["mask"])
  n = x.shape[0] if x.ndim else 0
  if group_ids.shape != (n,) or mask.shape != (n,):
    raise BatchError(
        f"shape mismatch: x has {n} rows {x.shape}, group_ids {group_ids.shape}, mask "
        f"{mask.shape}; group_ids and mask must both be [N] = [{n}]"
    )
  for key in ("labels", "factors"):
    if key in batch and np.asarray(batch[key]).shape[:1] != (n,):
      raise BatchError(
          f"'{key}' has shape {np.asarray(batch[key]).shape}, expected {n} rows like x"
      )
  if not np.issubdtype(group_ids.dtype, np.integer):
    raise BatchError(f"group_ids must be integers, got dtype {group_ids.dtype}")
  if mask.dtype != np.bool_:
    raise BatchError(f"mask must be bool, got dtype {mask.dtype}")
  if num_groups < 1:
    raise BatchError(f"num_groups must be >= 1, got {num_groups}")
  unsorted = np.nonzero(np.diff(group_ids) < 0)[0] + 1
  if unsorted.size:
    raise BatchError(
        f"group_ids are not sorted ascending at {_rows(unsorted)}; sort the batch by group id "
        "(padding rows, id G, go last)"
    )
  out_of_range = np.nonzero(mask & ((group_ids < 0) | (group_ids >= num_groups)))[0]
  if out_of_range.size:
    raise BatchError(
        f"valid {_rows(out_of_range)} have group ids {group_ids[out_of_range][:8].tolist()} "
        f"outside [0, {num_groups}); raise num_groups or renumber the groups"
    )
  bad_padding = np.nonzero(~mask & (group_ids != num_groups))[0]
  if bad_padding.size:
    raise BatchError(
        f"padding {_rows(bad_padding)} (mask False) have ids "
        f"{group_ids[bad_padding][:8].tolist()}; padding rows must carry id {num_groups} (G)"
    )
