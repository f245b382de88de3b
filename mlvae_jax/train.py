"""Training: `train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`.

The state is created already sharded (`jax.jit(init, out_shardings=...)`), the step is
jitted once with donated state and explicit shardings, the rng of step t is
`fold_in(rng, t)`, and batches come from the data iterator whose state is checkpointed with
the parameters: a run stopped after any checkpoint and restarted continues bit for bit.
Nothing is written to the workdir before every input has been checked (workdir.py).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from mlvae_jax import checkpoint as checkpoint_lib
from mlvae_jax import data as data_lib
from mlvae_jax import evaluation
from mlvae_jax import metrics_writer
from mlvae_jax import objectives
from mlvae_jax import sharding
from mlvae_jax import workdir as workdir_lib
from mlvae_jax.groups import validate_batch
from mlvae_jax.models import build_model
from mlvae_jax.workdir import SetupError

SCHEDULES = ("constant", "cosine")
STEP_KEYS = ("x", "group_ids", "mask")  # what the loss reads; labels/factors stay on host
# The host dispatches at most this many steps ahead of the devices. More gains little (the
# host prepares the next batch while the devices run), and with many virtual CPU devices on
# few cores a deep queue of collectives can deadlock XLA's CPU runtime (seen: 8 on 2 cores).
MAX_STEPS_IN_FLIGHT = 2
LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `rng` is raw key data (uint32) so orbax saves it as an array."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def make_schedule(optim_config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning rate per step: linear warmup, then constant or cosine decay to 0 at num_steps."""
  lr, warmup = optim_config.learning_rate, optim_config.warmup_steps
  if optim_config.schedule == "constant":
    main = optax.constant_schedule(lr)
  else:
    main = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(
    optim_config: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam on the schedule, after optional global-norm clipping."""
  schedule = make_schedule(optim_config, num_steps)
  adam = optax.adam(schedule)
  if optim_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adam), schedule
  return adam, schedule


def make_train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]:
  """One optimisation step; metrics add the gradient norm (before clipping) and the lr."""

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    return new_state, metrics

  return train_step


def init_state(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    observation_shape: tuple[int, ...],
    seed: int,
) -> Callable[[], TrainState]:
  """A function creating the initial state: jit it with out_shardings to create it sharded."""

  def init() -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    x = jnp.zeros((1, *observation_shape), jnp.float32)
    params = model.init({"params": init_rng}, x)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(train_rng),
    )

  return init


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings wanted now (the target of a restore)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a config and the visible devices determine, before any data or file is touched."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: flax.linen.Module
  loss_fn: LossFn
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  init: Callable[[], TrainState]
  state_shardings: Any  # a TrainState of NamedShardings
  abstract_state: Any  # a TrainState of ShapeDtypeStructs with those shardings

  @property
  def batch_sharding(self) -> jax.sharding.NamedSharding:
    return sharding.batch_sharding(self.mesh)

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return sharding.replicated(self.mesh)


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Checks `config` against the devices and builds model, loss, optimiser and state shapes.

  Raises SetupError (one line) for any bad value, so callers fail before writing anything.
  """
  check_config(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.data.batch_size, mesh)
  try:
    observation_shape = tuple(data_lib.observation_shape(config.data))
    model = build_model(config.model, observation_shape)
    loss_fn = objectives.make_loss_fn(model, config)
    evaluation.evaluator_names(config)
  except (ValueError, KeyError) as e:  # the builders' messages name the bad config field
    raise SetupError(str(e).strip().splitlines()[0]) from e
  tx, schedule = make_optimizer(config.optim, config.train.num_steps)
  init = init_state(model, tx, observation_shape, config.seed)
  abstract = jax.eval_shape(init)
  shardings = sharding.replicate_tree(abstract, mesh)
  _check_best_metric(config, loss_fn, abstract.params, observation_shape)
  return Setup(
      config, mesh, model, loss_fn, tx, schedule, init, shardings,
      with_shardings(abstract, shardings),
  )


def _check_best_metric(
    config: ml_collections.ConfigDict, loss_fn: LossFn, params: Any, observation_shape: tuple
) -> None:
  """keep_best_metric must name a validation metric the loss reports (shapes only)."""
  if not config.train.keep_best_metric:
    return
  n = config.data.batch_size
  batch = {
      "x": jax.ShapeDtypeStruct((n, *observation_shape), jnp.float32),
      "group_ids": jax.ShapeDtypeStruct((n,), jnp.int32),
      "mask": jax.ShapeDtypeStruct((n,), jnp.bool_),
  }
  _, metrics = jax.eval_shape(loss_fn, params, batch, jax.random.key(0))
  valid = sorted(f"val/{k}" for k in metrics)
  name, _ = checkpoint_lib.best_mode(config.train.keep_best_metric)
  if name not in valid:
    raise SetupError(
        f"config.train.keep_best_metric={config.train.keep_best_metric!r} is not a validation "
        f"metric; use one of {valid} (optionally prefixed 'min:' or 'max:')"
    )


def _make_iterator(config: ml_collections.ConfigDict, split: str) -> Any:
  try:
    return data_lib.make_batch_iterator(
        config.data, split, seed=config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
  except ValueError as e:  # DataError: the split cannot give the configured batches
    raise SetupError(str(e).strip().splitlines()[0]) from e


def device_batch(run: Setup, host_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """This process's rows of a batch -> the global batch, sharded along observations."""
  if run.config.train.debug_checks:
    validate_batch(host_batch, run.config.data.num_groups)
  return sharding.global_batch({k: host_batch[k] for k in STEP_KEYS}, run.mesh)


class Validation:
  """Mean loss metrics ('val/...') over the same first eval.num_batches validation batches
  and noise at every call, so values are comparable across steps (and keep-best is fair)."""

  def __init__(self, run: Setup):
    self.run = run
    self.iterator = _make_iterator(run.config, "validation")
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
      batch = device_batch(self.run, next(self.iterator))
      metrics = self.step(params, batch, jax.random.fold_in(rng, i))
      totals = {k: totals.get(k, 0.0) + v for k, v in metrics.items()}
    return {f"val/{k}": float(v) / config.eval.num_batches for k, v in jax.device_get(totals).items()}


def check_config(config: ml_collections.ConfigDict) -> None:
  """The training fields' values, checked before anything is built or written."""
  t, o = config.train, config.optim
  checks = [
      (t.num_steps >= 0, "train.num_steps", "a step count >= 0"),
      (t.log_every >= 1, "train.log_every", "a step count >= 1"),
      (t.eval_every >= 1, "train.eval_every", "a step count >= 1"),
      (t.checkpoint_every >= 1, "train.checkpoint_every", "a step count >= 1"),
      (t.keep_checkpoints >= 1, "train.keep_checkpoints", "a count >= 1"),
      (t.resume in workdir_lib.RESUME_MODES, "train.resume", f"one of {workdir_lib.RESUME_MODES}"),
      (o.schedule in SCHEDULES, "optim.schedule", f"one of {SCHEDULES}"),
      (o.learning_rate > 0, "optim.learning_rate", "a rate > 0"),
      (0 <= o.warmup_steps, "optim.warmup_steps", "a step count >= 0"),
      (o.grad_clip_norm >= 0, "optim.grad_clip_norm", "a norm >= 0 (0 disables clipping)"),
      (config.eval.num_batches >= 1, "eval.num_batches", "a count >= 1"),
      (config.data.batch_size >= 1, "data.batch_size", "a size >= 1"),
  ]
  for ok, key, expected in checks:
    if not ok:
      value = config
      for part in key.split("."):
        value = value[part]
      raise SetupError(f"config.{key}={value!r} is invalid; use {expected}")


def _plan(run: Setup, workdir: str) -> workdir_lib.ResumePlan:
  """Reads the workdir's checkpoints and decides what to do with them (writes nothing)."""
  workdir_lib.check_writable(workdir)
  existing = checkpoint_lib.Checkpoints(workdir, read_only=True)
  try:
    steps = existing.steps()
    saved = existing.saved_config(steps[-1]) if steps else None
    plan = workdir_lib.plan_resume(run.config, workdir, steps, saved)
    if plan.resume_step is not None:
      existing.check_shapes(plan.resume_step, run.abstract_state)
  finally:
    existing.close()
  return plan


def _start(
    run: Setup, workdir: str, plan: workdir_lib.ResumePlan, train_iter: Any
) -> tuple[checkpoint_lib.Checkpoints, TrainState]:
  """The first writes: a restart's old files go, config.json, then the state (new or restored)."""
  if jax.process_index() == 0:
    if plan.discard_steps:
      _discard_run(workdir)
    workdir_lib.write_config(run.config, workdir)
  checkpoints = checkpoint_lib.Checkpoints(workdir, run.config.train)
  if plan.resume_step is None:
    return checkpoints, jax.jit(run.init, out_shardings=run.state_shardings)()
  state, data_state = checkpoints.restore(plan.resume_step, run.abstract_state)
  train_iter.set_state(data_state)
  return checkpoints, state


def _discard_run(workdir: str) -> None:
  """What config.train.resume='restart' throws away: checkpoints and the old run's records."""
  shutil.rmtree(checkpoint_lib.checkpoint_dir(workdir))
  for name in (metrics_writer.TENSORBOARD_DIR, "eval"):
    shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
  for name in (metrics_writer.METRICS_FILE, workdir_lib.FINAL_METRICS_FILE):
    if os.path.exists(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))


# One dispatch per step rather than one per metric: the loop is host-bound for small models.
_add_trees = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


class _Window:
  """Metrics summed on device over the steps since the last log, and their timing.

  The clock runs only over steps: `restart_clock` after compilation, evaluation or saving
  keeps those out of the step time.
  """

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self.sums: dict[str, jax.Array] | None = None
    self.steps = 0
    self.restart_clock()

  def restart_clock(self) -> None:
    if self.sums is not None:
      jax.block_until_ready(self.sums)
    self.timed_steps = 0
    self.started = time.perf_counter()

  def add(self, metrics: dict[str, jax.Array]) -> None:
    self.sums = metrics if self.sums is None else _add_trees(self.sums, metrics)
    self.steps += 1
    self.timed_steps += 1

  def flush(self) -> dict[str, float]:
    """Means over the window, observations/s and seconds per step; starts a new window."""
    means = {f"train/{k}": float(v) / self.steps for k, v in jax.device_get(self.sums).items()}
    if self.timed_steps:
      step_time = (time.perf_counter() - self.started) / self.timed_steps
      means.update({"perf/step_time_s": step_time, "perf/obs_per_sec": self.batch_size / step_time})
    self.sums, self.steps = None, 0
    self.timed_steps, self.started = 0, time.perf_counter()
    return means


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains per `config` in `workdir` (resuming the run there, see config.train.resume),
  then evaluates; returns the final metrics, also written to WORKDIR/final_metrics.json."""
  run = setup(config)
  plan = _plan(run, workdir)
  if jax.process_count() > 1:  # every process reads the workdir before any process writes it
    multihost_utils.sync_global_devices("mlvae_jax:workdir_planned")
  train_iter = _make_iterator(config, "train")
  validate = Validation(run)
  checkpoints, state = _start(run, workdir, plan, train_iter)
  train = config.train
  start = int(jax.device_get(state.step))
  writer = metrics_writer.MetricsWriter(
      workdir, total_steps=train.num_steps, start_step=start, enabled=jax.process_index() == 0
  )
  step_fn = jax.jit(
      make_train_step(run.loss_fn, run.tx, run.schedule),
      in_shardings=(run.state_shardings, run.batch_sharding),
      out_shardings=(run.state_shardings, run.replicated),
      donate_argnums=(0,),
  )
  window = _Window(config.data.batch_size)
  record: dict[str, float] = {}
  in_flight: collections.deque = collections.deque()
  for step in range(start + 1, train.num_steps + 1):
    state, metrics = step_fn(state, device_batch(run, next(train_iter)))
    window.add(metrics)
    in_flight.append(metrics)
    if len(in_flight) > MAX_STEPS_IN_FLIGHT:
      jax.block_until_ready(in_flight.popleft())
    last = step == train.num_steps
    if step % train.log_every == 0 or last:
      steps = window.steps
      record = window.flush()
      writer.write(step, record)
      writer.advance(steps, {"loss": record["train/loss"]})
    saving = step % train.checkpoint_every == 0 or last
    evaluating = step % train.eval_every == 0 or last or (saving and train.keep_best_metric)
    if evaluating:
      val = validate(state.params)
      writer.write(step, val)
      record.update(val)
    if saving:
      checkpoints.save(step, state, train_iter.get_state(), config, record)
    if step == start + 1 or evaluating or saving:
      window.restart_clock()  # compilation, evaluation and saving are not step time
  writer.close()
  checkpoints.close()
  final = {"step": train.num_steps, **record}
  if "val/loss" not in final:  # the run was finished already: nothing was trained now
    final.update(validate(state.params))
  final.update(_run_evaluators(config, state.params, run, workdir, train.num_steps))
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


def restore_state(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[TrainState, int, Setup]:
  """(state, step, setup) of a checkpoint of `workdir`, placed on config.mesh.

  `step` defaults to the best checkpoint by config.train.keep_best_metric, else the latest.
  The mesh may differ from the one the run was trained on (e.g. 1 device for an 8-device run).
  """
  run = setup(config)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.train, read_only=True)
  try:
    steps = checkpoints.steps()
    if not steps:
      raise SetupError(f"workdir {workdir} holds no checkpoint; train there first")
    step = checkpoints.best_step() if step is None else step
    if step not in steps:
      raise SetupError(f"workdir {workdir} has no checkpoint at step {step}; it has {steps}")
    # restore() fails first on mismatched shapes, the most specific error.
    state, _ = checkpoints.restore(step, run.abstract_state, with_data=False)
    diffs = workdir_lib.config_differences(config.to_dict(), checkpoints.saved_config(step))
    if diffs:  # e.g. evaluating without the run's overrides would read other splits
      raise SetupError(
          f"checkpoint {step} of {workdir} was trained with another config "
          f"({workdir_lib.summarise_differences(diffs)}); give the run's overrides "
          f"(its full config is {os.path.join(workdir, workdir_lib.CONFIG_FILE)})"
      )
  finally:
    checkpoints.close()
  return state, step, run


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """`--mode=eval`: restores the workdir's best (or latest) checkpoint onto config.mesh and
  runs validation and the evaluators; returns their metrics (the evaluators write eval/)."""
  state, step, run = restore_state(config, workdir)
  metrics = {"step": step, **Validation(run)(state.params)}
  metrics.update(_run_evaluators(config, state.params, run, workdir, step))
  return metrics
