"""The training loop: plan the workdir, start or resume, step, log, evaluate, checkpoint.

The train call (K = config.train.steps_per_call steps, step_calls.py) is compiled once
with donated state and explicit shardings, and its memory checked against the devices before
anything is written (device_memory.py); the rng of step t is `fold_in(rng, t)`, and batches
come from the train feed (feed/: host batches prefetched, or the split kept on the
devices) whose iterator state is checkpointed with the parameters: a run stopped after any
checkpoint and restarted continues bit for bit. Calls end where the host acts (log,
evaluation, checkpoint, the last step), so every cadence falls on a call boundary.
Nothing is written to the workdir before every input has been checked (workdir.py).
What to evaluate, and when, is the caller's (`Evaluate`): this module knows no evaluator.
Faults: SIGTERM/SIGINT end the run after saving the step they arrive at (preemption.py); a
non-finite loss or gradient is handled per config.train.on_nonfinite (nonfinite.py), checked
where the host syncs anyway (log, evaluation, save), so no non-finite state is saved or
evaluated.
"""

from __future__ import annotations

import collections
import functools
import os
import shutil
import time
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.experimental import multihost_utils

from mlvae_jax.training import checkpoint as checkpoint_lib
from mlvae_jax.training import device_memory
from mlvae_jax.training import metrics_writer
from mlvae_jax.training import nonfinite
from mlvae_jax.training import preemption
from mlvae_jax.training import run_lock
from mlvae_jax.training import sharding
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.training import step_calls
from mlvae_jax.training import feed as train_feed
from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.training.setup import LossFn, Setup, TrainState

# The host dispatches at most this many calls ahead of the devices. More gains little (the
# host prepares the next inputs while the devices run), and with many virtual CPU devices on
# few cores a deep queue of collectives can deadlock XLA's CPU runtime (seen: 8 on 2 cores).
MAX_CALLS_IN_FLIGHT = 2


class Evaluate(Protocol):
  """The loop's evaluation hook: metrics of `params` due at `step` ({} when none is due).

  `saving`: a checkpoint is written at this step (keep-best needs its metric then);
  `last`: the final step of the run.
  """

  def __call__(self, step: int, params: Any, *, saving: bool, last: bool) -> dict[str, float]:
    ...

  def due(self, step: int, *, saving: bool, last: bool) -> list[str]:
    """What `__call__` would evaluate at `step` (the loop checks the state is finite first)."""
    ...


def make_train_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, schedule: optax.Schedule
) -> Callable[[TrainState, Mapping[str, jax.Array]], tuple[TrainState, dict]]:
  """One optimisation step; metrics add the gradient norm (before clipping) and the lr."""

  def train_step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, rng, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )
    return new_state, metrics

  return train_step


def scan_unroll(setup: Setup) -> int:
  """Steps per loop iteration of a call. XLA:CPU runs convolutions inside a loop about ten
  times slower (measured: shapes conv model, batch 64, 524 ms a step in a loop, 49 ms
  unrolled), while dense models run faster in the loop and compile 4x quicker (MNIST MLP,
  K=16: 7.4 vs 9.1 ms a step): so only conv models on CPU are unrolled."""
  conv_on_cpu = jax.default_backend() == "cpu" and setup.config.model.family == "conv"
  return setup.config.train.steps_per_call if conv_on_cpu else 1


def compile_call(setup: Setup, feed: train_feed.Feed) -> jax.stages.Compiled:
  """The run's one train call: K guarded steps on the feed's inputs, compiled for every
  group structure at once; a SetupError (one line) if a device cannot hold it."""
  train_config = setup.config.train
  k = train_config.steps_per_call
  step = nonfinite.guard_step(
      make_train_step(setup.loss_fn, setup.tx, setup.schedule), train_config)
  call = jax.jit(
      step_calls.scan_steps(step, k, feed.to_batch, scan_unroll(setup)),
      in_shardings=(setup.state_shardings, setup.replicated, feed.input_sharding,
                    feed.data_sharding),
      out_shardings=(setup.state_shardings, setup.replicated, setup.replicated),
      donate_argnums=(0, 1),
  )
  health = jax.eval_shape(nonfinite.Health.initial)
  health = setup_lib.with_shardings(health, sharding.replicate_tree(health, setup.mesh))
  compiled = call.lower(setup.abstract_state, health, feed.input_specs, feed.data).compile()
  devices = setup.mesh.local_devices
  device_memory.check_fits(compiled, devices[0], len(devices), feed.resident_bytes)
  return compiled


def plan(setup: Setup, workdir: str) -> workdir_lib.ResumePlan:
  """Reads the workdir's checkpoints and decides what to do with them (writes nothing)."""
  workdir_lib.check_writable(workdir)
  existing = checkpoint_lib.Checkpoints(workdir, read_only=True)
  try:
    steps = existing.steps()
    if existing.damaged and not steps:
      raise existing.none_intact()
    saved = existing.saved_config(steps[-1]) if steps else None
    resume = workdir_lib.plan_resume(setup.config, workdir, steps, saved)
    if resume.resume_step is not None:
      existing.check_shapes(resume.resume_step, setup.abstract_state)
  finally:
    existing.close()
  return resume


def _start(
    setup: Setup, workdir: str, resume: workdir_lib.ResumePlan, train_iter: Any,
    lock: run_lock.RunLock | None,
) -> tuple[checkpoint_lib.Checkpoints, TrainState]:
  """The first writes: the lock's holder, a restart's old files go, config.json, then the
  state (new, or restored from the newest checkpoint that reads)."""
  if lock:
    lock.announce()
  if jax.process_index() == 0:
    if resume.discard_steps:
      _discard_run(workdir)
    workdir_lib.write_config(setup.config, workdir)
  checkpoints = checkpoint_lib.Checkpoints(workdir, setup.config.train)
  if resume.resume_step is None:
    return checkpoints, jax.jit(setup.init, out_shardings=setup.state_shardings)()
  _, state, data_state = checkpoints.restore_readable(
      setup.abstract_state, preferred=[resume.resume_step])
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
add_trees = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))


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

  def add(self, metrics: dict[str, jax.Array], steps: int) -> None:
    """`metrics`: sums over a call of `steps` steps."""
    self.sums = metrics if self.sums is None else add_trees(self.sums, metrics)
    self.steps += steps
    self.timed_steps += steps

  def flush(self) -> dict[str, float]:
    """Means over the window, observations/s and seconds per step; starts a new window."""
    means = {f"train/{k}": float(v) / self.steps for k, v in jax.device_get(self.sums).items()}
    if self.timed_steps:
      step_time = (time.perf_counter() - self.started) / self.timed_steps
      means.update({"perf/step_time_s": step_time, "perf/obs_per_sec": self.batch_size / step_time})
    self.sums, self.steps = None, 0
    self.timed_steps, self.started = 0, time.perf_counter()
    return means


def train(
    setup: Setup, workdir: str, evaluate: Evaluate, lock: run_lock.RunLock | None = None
) -> tuple[TrainState, dict[str, float]]:
  """Trains `run` in `workdir` up to config.train.num_steps, resuming the run there (see
  config.train.resume); returns the final state and the last logged and evaluated metrics
  ({} if the run had finished before: nothing was trained now). `lock`: the workdir's, held
  by the caller (the run records itself as its holder when it starts writing).

  Raises preemption.Preempted once the step a SIGTERM or SIGINT arrived at is saved, and
  nonfinite.NonFiniteError when config.train.on_nonfinite ends the run."""
  config, train_config = setup.config, setup.config.train
  resume = plan(setup, workdir)
  feed = train_feed.make_feed(setup)
  call_fn = compile_call(setup, feed)
  if jax.process_count() > 1:  # every process reads the workdir before any process writes it
    multihost_utils.sync_global_devices("mlvae_jax:workdir_planned")
  checkpoints, state = _start(setup, workdir, resume, feed.iterator, lock)
  start = int(jax.device_get(state.step))
  writer = metrics_writer.MetricsWriter(
      workdir, total_steps=train_config.num_steps, start_step=start,
      enabled=jax.process_index() == 0,
  )
  health = jax.jit(nonfinite.Health.initial, out_shardings=setup.replicated)()
  window = _Window(config.data.batch_size)
  record: dict[str, float] = {}
  in_flight: collections.deque = collections.deque()
  call_length = functools.partial(
      step_calls.call_length, steps_per_call=train_config.steps_per_call,
      stops_at=functools.partial(_host_acts_at, train_config, evaluate))
  # Calls are counted from `start`, one apart, as the multi-host stop agreement needs; with
  # one step per call the count is the step.
  count = step = start
  with preemption.StopSignals() as signals:
    calls = train_feed.calls(feed, setup, start, train_config.num_steps, call_length)
    try:
      for call in calls:
        state, health, metrics = call_fn(state, health, call.inputs, feed.data)
        count, step = count + 1, step + call.steps
        window.add(metrics, call.steps)
        in_flight.append(metrics)
        checkpoints.poll()  # a failed save ends the run now, not one save later
        if len(in_flight) > MAX_CALLS_IN_FLIGHT:
          jax.block_until_ready(in_flight.popleft())
        stopping = signals.reached(count)
        last = step == train_config.num_steps and not stopping  # stopping: evaluate on relaunch
        logged = step % train_config.log_every == 0 or last or stopping
        if logged:
          steps = window.steps
          record = window.flush()
          writer.write(step, record)
          writer.advance(steps, {"loss": record["train/loss"]})
        saving = step % train_config.checkpoint_every == 0 or step == train_config.num_steps
        if logged or saving or evaluate.due(step, saving=saving, last=last):
          nonfinite.check(health, train_config, checkpoints.latest_description())
        if last:  # the final step is on disk before the end-of-run evaluators start
          checkpoints.save(step, state, call.data_state, config, record)
          checkpoints.finish_pending()
        evaluated = evaluate(step, state.params, saving=saving, last=last)
        if evaluated:
          writer.write(step, evaluated)
          record.update(evaluated)
        if last:
          checkpoints.add_metrics(step, evaluated)  # keep-best ranks the final step by them
        elif saving or stopping:
          checkpoints.save(step, state, call.data_state, config, record)
        if stopping:
          raise preemption.Preempted(step, signals.signal_name, checkpoints.directory)
        if count == start + 1 or evaluated or saving:
          window.restart_clock()  # the first call's start, evaluation and saving are not step time
    finally:
      calls.close()
      writer.close()
      checkpoints.close()  # commits the pending save; a signal meanwhile waits for it
    if signals.reached(count):  # it came after the last call's check
      raise preemption.Preempted(train_config.num_steps, signals.signal_name,
                                 checkpoints.directory)
  return state, record


def _host_acts_at(train_config: ml_collections.ConfigDict, evaluate: Evaluate, step: int) -> bool:
  """Whether the host logs, evaluates or saves at `step`: a call must end there."""
  last = step == train_config.num_steps
  saving = step % train_config.checkpoint_every == 0 or last
  return (step % train_config.log_every == 0 or saving
          or bool(evaluate.due(step, saving=saving, last=last)))
