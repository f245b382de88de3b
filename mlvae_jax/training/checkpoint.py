"""Orbax checkpoints of a run: train state, data-iterator state and config, saved together.

WORKDIR/checkpoints/<step>/ holds three items: `state` (params, optimiser state, step and
rng, restored onto whatever mesh the caller asks for), `data_iter` (the JSON state of every
process's batch iterator, so a resumed run sees the same batches) and `config`. Reading
never creates or changes anything, so callers can inspect a workdir before deciding to
write to it.

Faults: a save is written to a temporary directory and renamed when complete (orbax), and
a rotated-out checkpoint is first renamed into checkpoints/deleting/ and only then deleted,
so a kill at any moment leaves no half-written or half-deleted step; what a kill leaves in
a temporary directory or in deleting/ is removed, quietly, by the next run. A checkpoint
that cannot be read anyway (a damaged disk, a truncated copy) is reported in one line and
moved to WORKDIR/checkpoints_damaged/<step>-<time> by a training run (nothing is deleted);
readers fall back to the newest one that reads. A state with NaN or infinite values is
never saved, and one restored from elsewhere is refused.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import shutil
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.experimental import multihost_utils

from mlvae_jax import configs
from mlvae_jax.training import nonfinite
from mlvae_jax.training.workdir import SetupError

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
_DELETING_DIR = "deleting"  # orbax renames rotated-out steps in here; we delete them after
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's record of a step (time, metrics)
_MINIMISED_MARKERS = ("loss", "bits", "error", "nll")
# What reading a damaged checkpoint raises: tensorstore's DATA_LOSS / OUT_OF_RANGE
# (ValueError), bad JSON (ValueError), missing files (OSError), missing items (KeyError).
_DAMAGE = (ValueError, OSError, KeyError)
_UNREADABLE_ELSEWHERE = "another process cannot read it"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def best_mode(metric: str) -> tuple[str, str]:
  """(metric name, 'min' | 'max'): a 'min:' / 'max:' prefix wins, else losses are minimised."""
  for mode in ("min", "max"):
    if metric.startswith(mode + ":"):
      return metric[len(mode) + 1:], mode
  return metric, "min" if any(m in metric for m in _MINIMISED_MARKERS) else "max"


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {
      "state": ocp.StandardCheckpointHandler(),
      "data_iter": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
  }


def _options(
    train_config: ml_collections.ConfigDict | None, read_only: bool
) -> ocp.CheckpointManagerOptions:
  """Keep the latest keep_checkpoints, plus the best by keep_best_metric if it is set."""
  keep = train_config.keep_checkpoints if train_config else None
  metric = train_config.keep_best_metric if train_config else ""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  best = {}
  if metric:
    name, mode = best_mode(metric)
    # A step saved without the metric (a preemption save, a non-finite value) ranks last.
    worst = math.inf if mode == "min" else -math.inf
    # best_fn also makes orbax store each step's metrics (for BestN and best_step).
    best = dict(best_fn=lambda metrics: metrics.get(name, worst), best_mode=mode)
    policies.append(
        ocp.checkpoint_managers.BestN(
            get_metric_fn=best["best_fn"],
            reverse=mode == "min",
            n=1,
            keep_checkpoints_without_metrics=False,
        )
    )
  # Reading uses create/cleanup/save_interval off rather than orbax's read_only, which warns
  # on every open; `Checkpoints` never saves or deletes through a reading manager.
  return ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      create=not read_only,  # temporary directories: Checkpoints removes them, between saves
      save_interval_steps=0 if read_only else 1,
      todelete_subdir=None if read_only else _DELETING_DIR,
      **best,
  )


def _leaf_name(path: tuple[Any, ...]) -> str:
  """The dotted name orbax gives a leaf, e.g. 'opt_state.1.0.mu.w'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return ".".join(parts)


def _gather_process_states(state: Mapping[str, Any]) -> list[Any]:
  """Every process's (JSON) iterator state, in process order, on every process."""
  if jax.process_count() == 1:
    return [state]
  encoded = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.array([encoded.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[: encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)
  return [
      json.loads(bytes(row[: int(n)]).decode())
      for row, n in zip(gathered, np.asarray(lengths).reshape(-1))
  ]


def damaged_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), DAMAGED_DIR)


def _drop_closed_loop_noise(previous: Callable[[Any], None]) -> Callable[[Any], None]:
  def hook(unraisable: Any) -> None:
    if not (isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook.drops_closed_loop_noise = True
  return hook


def _silence_failed_read_callbacks() -> None:
  """After a failed read of a damaged checkpoint, tensorstore's pending callbacks reach
  orbax's closed event loop and print 'Event loop is closed' tracebacks, even seconds later
  (through sys.unraisablehook); drop those, and only those."""
  if not getattr(sys.unraisablehook, "drops_closed_loop_noise", False):
    sys.unraisablehook = _drop_closed_loop_noise(sys.unraisablehook)


def _reason(error: BaseException) -> str:
  """The gist of a read error, for a one-line report."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ""
  return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def _on_every_process(ok: bool) -> bool:
  """True if `ok` holds on every process (processes decide about a checkpoint together)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


class _DropStepMetadataComplaints(logging.Filter):
  """Orbax logs a warning or error for each step whose metadata file is missing or bad,
  whenever it opens the directory; those steps are reported here once, in one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    return _STEP_METADATA not in record.getMessage()


@contextlib.contextmanager
def _quiet_about_step_metadata() -> Iterator[None]:
  log_filter = _DropStepMetadataComplaints()
  absl_logging.get_absl_logger().addFilter(log_filter)
  try:
    yield
  finally:
    absl_logging.get_absl_logger().removeFilter(log_filter)


class Checkpoints:
  """The checkpoints of one workdir, kept per `train_config` (config.train).

  With `read_only` nothing is created, deleted, moved or written, even the directory; steps
  that cannot be read are then left in place and skipped. A writable instance (one per run,
  under the workdir's lock) moves them aside when it opens.
  """

  def __init__(
      self,
      workdir: str,
      train_config: ml_collections.ConfigDict | None = None,
      *,
      read_only: bool = False,
  ):
    self.workdir = workdir
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    self.damaged: dict[int, str] = {}  # unreadable steps left in place (read_only)
    self._train_config = train_config
    self._manager = None
    _silence_failed_read_callbacks()
    exists = os.path.isdir(self.directory)
    if jax.process_count() > 1:  # all look before one creates it: orbax's collectives differ
      multihost_utils.sync_global_devices("mlvae_jax:checkpoints_looked_at")
    if exists:
      self._manager = self._open(read_only=True)
      self.damaged = {
          step: problem for step in self._manager.all_steps()
          if (problem := self._problem(step)) is not None
      }
      if read_only:
        return
      self._manager.close()
      self._remove_leftovers()
      for step, problem in sorted(self.damaged.items()):
        self._set_aside(step, problem)
      self.damaged = {}
    elif read_only:
      return
    self._manager = self._open(read_only=False)

  def _open(self, read_only: bool) -> ocp.CheckpointManager:
    with _quiet_about_step_metadata():
      return ocp.CheckpointManager(
          self.directory, options=_options(self._train_config, read_only),
          item_handlers=_handlers(),
      )

  def _problem(self, step: int) -> str | None:
    """Why checkpoint `step` cannot be read, judged from its metadata (None if it reads).

    Reads the step's record, its config and the metadata of every array (which lives in
    the same files as the arrays), not the arrays themselves; `restore` catches the rest.
    """
    problem = None
    try:
      with open(os.path.join(self.directory, str(step), _STEP_METADATA)) as f:
        json.load(f)
      self.saved_config(step)
      jax.tree.leaves(self._manager.item_metadata(step)["state"].tree)
    except _DAMAGE as e:
      problem = _reason(e)
    if _on_every_process(problem is None):
      return None
    return problem or _UNREADABLE_ELSEWHERE

  def _set_aside(self, step: int, problem: str) -> None:
    """Reports an unreadable step in one line; moves it to WORKDIR/checkpoints_damaged."""
    where = f"checkpoint {step} of {self.directory} cannot be read ({problem})"
    if self.read_only:
      print(f"{where}; skipped (a training run in this workdir moves it aside)", file=sys.stderr)
      return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    destination = os.path.join(damaged_dir(self.workdir), f"{step}-{stamp}")
    if jax.process_index() == 0:
      os.makedirs(damaged_dir(self.workdir), exist_ok=True)
      os.rename(os.path.join(self.directory, str(step)), destination)
      print(f"{where}; moved to {destination}", file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"mlvae_jax:set_aside_{step}")

  def steps(self) -> list[int]:
    """Steps of the complete, readable checkpoints, ascending (incomplete saves, moved-away
    and unreadable steps are not listed)."""
    if not self._manager:
      return []
    return sorted(set(self._manager.all_steps()) - set(self.damaged))

  def saved_config(self, step: int) -> dict[str, Any]:
    """The config dict stored with checkpoint `step` (keys added since: their defaults)."""
    saved = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return configs.fill_later_defaults(saved["config"])

  def check_shapes(self, step: int, abstract_state: Any) -> None:
    """Fails with one line naming the first leaf whose stored shape differs from the target."""
    stored = {
        m.name: tuple(m.shape)
        for m in jax.tree.leaves(self._manager.item_metadata(step)["state"].tree)
    }
    leaves, _ = jax.tree_util.tree_flatten_with_path(abstract_state)
    expected = {_leaf_name(path): tuple(leaf.shape) for path, leaf in leaves}
    params_first = lambda name: (not name.startswith("params."), name)  # noqa: E731
    for name in sorted(set(stored) | set(expected), key=params_first):
      if stored.get(name) != expected.get(name):
        raise SetupError(
            f"checkpoint {self.directory}/{step} does not match the config: '{name}' is "
            f"{stored.get(name, 'absent')} there and {expected.get(name, 'absent')} in the "
            "model of this config; restore with the config the run was trained with "
            "(its config.json)"
        )

  def restore(
      self, step: int, abstract_state: Any, with_data: bool = True
  ) -> tuple[Any, Any | None]:
    """(state, this process's iterator state or None) of checkpoint `step`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with the shardings wanted now, so a
    checkpoint saved on 8 devices restores onto 1 (or any mesh) without going through host.
    A state holding NaN or infinite values is refused (SetupError).
    """
    self.check_shapes(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data:
      items["data_iter"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    bad = nonfinite.nonfinite_paths(restored["state"])
    if bad:
      raise SetupError(
          f"checkpoint {self.directory}/{step} holds non-finite values (first in "
          f"'{_leaf_name(bad[0])}'): the run had diverged when it was saved; resume or "
          "evaluate an earlier checkpoint (move this one out of the directory)"
      )
    if not with_data:
      return restored["state"], None
    per_process = restored["data_iter"]["processes"]
    if len(per_process) != jax.process_count():
      raise SetupError(
          f"checkpoint {self.directory}/{step} was written by {len(per_process)} processes and "
          f"this run has {jax.process_count()}; resume with the same number of processes"
      )
    return restored["state"], per_process[jax.process_index()]

  def restore_readable(
      self,
      abstract_state: Any,
      *,
      preferred: Sequence[int] = (),
      fallback: bool = True,
      with_data: bool = True,
  ) -> tuple[int, Any, Any | None]:
    """(step, state, iterator state) of the first of `preferred`, then (with `fallback`) of
    the newest checkpoint, that reads. Each that does not is reported in one line (and moved
    aside when writable); SetupError if none reads, or for a mismatch with the config."""
    newest_first = sorted(self.steps(), reverse=True)
    order = [s for s in preferred if s in newest_first]
    order += [s for s in newest_first if s not in order] if fallback else []
    for step in order:
      problem = None
      try:
        state, data_state = self.restore(step, abstract_state, with_data)
      except SetupError:
        raise
      except _DAMAGE as e:
        problem = _reason(e)
      if _on_every_process(problem is None):
        self._report_skipped(newer_than=step)
        return step, state, data_state
      if self.read_only:
        self.damaged[step] = problem or _UNREADABLE_ELSEWHERE
      else:
        self._set_aside(step, problem or _UNREADABLE_ELSEWHERE)
        self._manager.reload()
    self._report_skipped(newer_than=-1)
    if not fallback:
      raise SetupError(f"checkpoint {', '.join(map(str, preferred))} of {self.directory} cannot "
                       "be read (see the line above); choose another step")
    raise SetupError(
        f"no checkpoint of {self.directory} can be read (see the lines above); relaunch to "
        f"start afresh, or restore them from {damaged_dir(self.workdir)}"
    )

  def _report_skipped(self, newer_than: int) -> None:
    """One line for each unreadable step a read-only reader skipped above `newer_than`."""
    for step in sorted(s for s in self.damaged if s > newer_than):
      self._set_aside(step, self.damaged[step])

  def save(
      self,
      step: int,
      state: Any,
      data_state: Any,
      config: ml_collections.ConfigDict,
      metrics: Mapping[str, float] | None = None,
  ) -> None:
    """Saves all three items (asynchronously; all processes must call it).

    Refuses a state with NaN or infinite values (NonFiniteError); non-finite metrics are
    left out, so they never rank a checkpoint as the best.
    """
    if self.read_only:
      raise RuntimeError(f"checkpoints of {self.directory} were opened read-only")
    bad = nonfinite.nonfinite_paths(state)
    if bad:
      raise nonfinite.NonFiniteError(
          f"checkpoint {step} was not saved: '{_leaf_name(bad[0])}' holds NaN or infinite "
          f"values; the last good checkpoint is {self.latest_description()}"
      )
    items = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=ocp.args.JsonSave({"processes": _gather_process_states(data_state)}),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
    )
    self._manager.wait_until_finished()  # the previous save has renamed what it rotated out
    self._remove_leftovers()
    finite = {k: v for k, v in (metrics or {}).items() if math.isfinite(v)}
    self._manager.save(step, args=items, metrics=finite, force=True)

  def _remove_leftovers(self) -> None:
    """Deletes the steps orbax renamed into deleting/ and the temporary directories of
    interrupted saves. Only between saves: no save of this run is in flight then, and the
    workdir's lock keeps other runs out."""
    if jax.process_index() != 0:
      return
    for name in os.listdir(self.directory):
      if name == _DELETING_DIR or ocp.path.step.TMP_DIR_SUFFIX in name:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

  def latest_description(self) -> str:
    """'step S in DIR' for the newest saved checkpoint, or 'none (...)'."""
    steps = self.steps()
    if not steps:
      return f"none (no checkpoint was saved in {self.directory})"
    return f"step {steps[-1]} in {self.directory}"

  def best_step(self) -> int | None:
    """The step best by keep_best_metric (the latest if none is set); None if none saved."""
    if not self._manager:
      return None
    best = self._manager.best_step()
    return best if best not in self.damaged else max(self.steps(), default=None)

  def close(self) -> None:
    """Waits for pending saves; call before the process exits."""
    if self._manager:
      self._manager.wait_until_finished()
      if not self.read_only:
        self._remove_leftovers()
      self._manager.close()
