"""Training and evaluation of a config: `train_and_evaluate(config, workdir)` and
`evaluate(config, workdir)` (`--mode=eval`).

This module wires the pieces together: `state.setup` (config checks, model, optimiser,
shardings), `loop.train` (the step loop, with an evaluation hook), `restore.restore_state`
(a checkpoint on a mesh) and the evaluation protocols; it writes final_metrics.json.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mlvae_jax import checkpoint as checkpoint_lib
from mlvae_jax import evaluation
from mlvae_jax import loop
from mlvae_jax import workdir as workdir_lib
from mlvae_jax.restore import restore_state
from mlvae_jax.state import Setup, setup
from mlvae_jax.workdir import SetupError


def _check_evaluation(run: Setup) -> None:
  """The evaluation fields: known protocols, and a keep_best_metric the validation reports."""
  config = run.config
  try:
    evaluation.evaluator_names(config)
  except ValueError as e:
    raise SetupError(str(e).strip().splitlines()[0]) from e
  if not config.train.keep_best_metric:
    return
  n = config.data.batch_size
  batch = {
      "x": jax.ShapeDtypeStruct((n, *run.observation_shape), jnp.float32),
      "group_ids": jax.ShapeDtypeStruct((n,), jnp.int32),
      "mask": jax.ShapeDtypeStruct((n,), jnp.bool_),
  }
  _, metrics = jax.eval_shape(run.loss_fn, run.abstract_state.params, batch, jax.random.key(0))
  valid = sorted(f"val/{k}" for k in metrics)
  name, _ = checkpoint_lib.best_mode(config.train.keep_best_metric)
  if name not in valid:
    raise SetupError(
        f"config.train.keep_best_metric={config.train.keep_best_metric!r} is not a validation "
        f"metric; use one of {valid} (optionally prefixed 'min:' or 'max:')"
    )


class Validation:
  """Mean loss metrics ('val/...') over the same first eval.num_batches validation batches
  and noise at every call, so values are comparable across steps (and keep-best is fair)."""

  def __init__(self, run: Setup):
    self.run = run
    self.iterator = loop.make_iterator(run.config, "validation")
    self.start = self.iterator.get_state()
    self.step = jax.jit(
        lambda params, batch, rng: run.loss_fn(params, batch, rng)[1],
        in_shardings=(run.state_shardings.params, run.batch_sharding, run.replicated),
        out_shardings=run.replicated,
    )

  def __call__(self, params: Any) -> dict[str, float]:
    self.iterator.set_state(self.start)
    config = self.run.config
    rng = jax.random.key(config.seed + 1)
    totals: dict[str, jax.Array] = {}
    for i in range(config.eval.num_batches):
      batch = loop.device_batch(self.run, next(self.iterator))
      metrics = self.step(params, batch, jax.random.fold_in(rng, i))
      totals = {k: totals.get(k, 0.0) + v for k, v in metrics.items()}
    return {f"val/{k}": float(v) / config.eval.num_batches for k, v in jax.device_get(totals).items()}

  def during_training(
      self, step: int, params: Any, *, saving: bool, last: bool
  ) -> dict[str, float]:
    """The loop's hook: validation every eval_every, at the end, and where keep-best saves."""
    train = self.run.config.train
    if step % train.eval_every == 0 or last or (saving and train.keep_best_metric):
      return self(params)
    return {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains per `config` in `workdir` (resuming the run there, see config.train.resume),
  then evaluates; returns the final metrics, also written to WORKDIR/final_metrics.json."""
  run = setup(config)
  _check_evaluation(run)
  validate = Validation(run)
  state, record = loop.train(run, workdir, validate.during_training)
  num_steps = config.train.num_steps
  final = {"step": num_steps, **record}
  if "val/loss" not in final:  # the run was finished already: nothing was trained now
    final.update(validate(state.params))
  final.update(_run_evaluators(config, state.params, run, workdir, num_steps))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, workdir_lib.FINAL_METRICS_FILE), "w") as f:
      json.dump(final, f, indent=2, sort_keys=True)
    print(evaluation.headline(final, workdir))
  return final


def _run_evaluators(
    config: ml_collections.ConfigDict, params: Any, run: Setup, workdir: str, step: int
) -> dict[str, float]:
  """The configured evaluation protocols, on process 0 with a host copy of the parameters
  (they are replicated, so every process holds them whole); {} on other processes."""
  if jax.process_index() != 0:
    return {}
  host_params = jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), params)
  return evaluation.run_evaluators(config, host_params, run.model, workdir, step=step)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """`--mode=eval`: restores the workdir's best (or latest) checkpoint onto config.mesh and
  runs validation and the evaluators; returns their metrics (the evaluators write eval/)."""
  state, step, run = restore_state(config, workdir)
  _check_evaluation(run)
  metrics = {"step": step, **Validation(run)(state.params)}
  metrics.update(_run_evaluators(config, state.params, run, workdir, step))
  return metrics
