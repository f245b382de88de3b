"""What a run does when its loss or gradient stops being finite (`config.train.on_nonfinite`).

Detection happens on device, inside the jitted step, and is carried in a small `Health`
beside the state; the host reads it only where it syncs anyway (logging, evaluation,
saving), so there is no extra host sync per step.

- `stop` (default): the run ends at the next such boundary with one line naming the first
  non-finite step and the last good checkpoint; nothing is saved or evaluated after it.
- `skip`: a non-finite update is dropped (parameters and optimiser state stay as they were;
  the step counter and the data move on) and counted in the metrics (`train/nonfinite`, the
  fraction of a log window's steps that were dropped); `max_nonfinite_in_a_row` dropped
  steps in a row end the run as `stop` does.

Checkpoints refuse non-finite states on save and restore (checkpoint.py), so good ones are
never rotated out for bad ones and evaluation never sees NaN parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

POLICIES = ("stop", "skip")


class NonFiniteError(RuntimeError):
  """The run ended on a non-finite loss or gradient; the message is one line."""


@flax.struct.dataclass
class Health:
  """Consecutive non-finite steps, and the step at which the policy ended the run (-1: not).

  Not checkpointed: a resumed run starts counting afresh.
  """

  in_a_row: jax.Array
  stopped_at: jax.Array

  @classmethod
  def initial(cls) -> Health:
    return cls(in_a_row=jnp.zeros((), jnp.int32), stopped_at=jnp.full((), -1, jnp.int32))


def guard_step(
    train_step: Callable[[Any, Mapping[str, jax.Array]], tuple[Any, dict]],
    train_config: ml_collections.ConfigDict,
) -> Callable[[Any, Health, Mapping[str, jax.Array]], tuple[Any, Health, dict]]:
  """`train_step` with the policy of `train_config` (config.train) applied; metrics gain
  `nonfinite` (1.0 for a step whose loss or gradient norm is not finite).

  The state must have a `step` field (advanced even when an update is dropped).
  """
  policy = train_config.on_nonfinite
  limit = 1 if policy == "stop" else train_config.max_nonfinite_in_a_row

  def step(state: Any, health: Health, batch: Mapping[str, jax.Array]):
    new_state, metrics = train_step(state, batch)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
    if policy == "skip":
      kept = state.replace(step=new_state.step)
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
    in_a_row = jnp.where(finite, 0, health.in_a_row + 1)
    ends_now = (health.stopped_at < 0) & (in_a_row >= limit)
    stopped_at = jnp.where(ends_now, new_state.step, health.stopped_at).astype(jnp.int32)
    metrics = dict(metrics, nonfinite=jnp.logical_not(finite).astype(jnp.float32))
    return new_state, Health(in_a_row=in_a_row, stopped_at=stopped_at), metrics

  return step


def _host_scalar(value: jax.Array) -> int:
  """A replicated device scalar on the host (also when other processes hold copies)."""
  return int(np.asarray(value.addressable_data(0)))


def check(health: Health, train_config: ml_collections.ConfigDict, last_good: str) -> None:
  """Raises NonFiniteError if the policy has ended the run; `last_good` names the newest
  good checkpoint for the message. One device-to-host transfer of a scalar."""
  stopped_at = _host_scalar(health.stopped_at)
  if stopped_at < 0:
    return
  if train_config.on_nonfinite == "stop":
    what = f"non-finite loss or gradient at step {stopped_at} (config.train.on_nonfinite='stop')"
    remedy = "; or relaunch with --config.train.on_nonfinite=skip to drop such updates"
  else:
    n = train_config.max_nonfinite_in_a_row
    what = (f"{n} non-finite updates in a row up to step {stopped_at}, all skipped "
            f"(config.train.max_nonfinite_in_a_row={n})")
    remedy = ""
  raise NonFiniteError(
      f"{what}; the run stopped without saving; last good checkpoint: {last_good}; lower "
      f"optim.learning_rate or set optim.grad_clip_norm{remedy}"
  )


_finite_flags = jax.jit(lambda leaves: jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]))


def nonfinite_paths(tree: Any) -> list[tuple[Any, ...]]:
  """Key paths of the floating-point leaves of `tree` holding a NaN or an infinity.

  One jitted reduction and one small transfer, whatever the size or sharding of the tree.
  """
  leaves = [
      (path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
      if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)
  ]
  if not leaves:
    return []
  flags = np.asarray(_finite_flags([leaf for _, leaf in leaves]).addressable_data(0))
  return [path for (path, _), ok in zip(leaves, flags) if not ok]
