"""Orbax checkpoints of a run: train state, data-iterator state and config, saved together.

WORKDIR/checkpoints/<step>/ holds three items: `state` (params, optimiser state, step and
rng, restored onto whatever mesh the caller asks for), `data_iter` (the JSON state of every
process's batch iterator, so a resumed run sees the same batches) and `config`, and, written
last, `integrity.json` (integrity.py): the digest of every file, array and item. Reading
never creates or changes anything, so callers can inspect a workdir before deciding to
write to it.

Faults: a save is written to a temporary directory and renamed when complete (orbax), and
a rotated-out checkpoint is first renamed into checkpoints/deleting/ and only then deleted,
so a kill at any moment leaves no half-written or half-deleted step; what a kill leaves in
a temporary directory or in deleting/ is removed, quietly, by the next run. A save is
checked when it completes (`poll`, every call; at the latest before the next save): one
that failed (a full or unwritable disk) ends the run with SaveError, in one line. A
checkpoint is intact only if its integrity record is there and every file and restored value
matches it; any other (whatever fails: a missing or truncated file, a flipped bit, an
interrupted save) is reported in one line and moved to WORKDIR/checkpoints_damaged/<step>-<time>
by a training run (nothing is deleted); readers skip it and fall back to the newest intact
one, and retry when a running trainer rotates away the one they read. A state with NaN or
infinite values is never saved, and one restored from elsewhere is refused.

Checkpoints written before integrity records existed (orbax's step metadata of every save
since carries `_SEALED_MARK`; theirs does not) are legacy, not damaged: each is reported in
one line, read with a record built from what it holds now (files, JSON items, the arrays'
shapes; the values cannot be checked against the save), and sealed with that record by the
next training run in the workdir, so damage after that point is caught.
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
from mlvae_jax.training import integrity, nonfinite, run_lock
from mlvae_jax.training.workdir import SetupError

leaf_name = integrity.leaf_name

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
_DELETING_DIR = "deleting"  # orbax renames rotated-out steps in here; we delete them after
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's record of a step (time, metrics)
_MINIMISED_MARKERS = ("loss", "bits", "error", "nll")
_UNREADABLE_ELSEWHERE = "another process cannot read it"
_ROTATED = "removed while it was read (a running training rotated it out)"
# In orbax's step metadata of every save that is followed by an integrity record: a step
# without the record is legacy (written before records existed) only if this is absent.
_SEALED_MARK = "mlvae_jax_integrity_record"


class SaveError(Exception):
  """A checkpoint could not be written (full or unwritable disk): the run stops."""


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


def _options(train_config: ml_collections.ConfigDict | None) -> ocp.CheckpointManagerOptions:
  """Keep the latest keep_checkpoints, plus the best by keep_best_metric if it is set."""
  keep = train_config.keep_checkpoints if train_config else None
  metric = train_config.keep_best_metric if train_config else ""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  best = {}
  if metric:
    name, mode = best_mode(metric)
    worst = _worst(mode)  # a step saved without the metric (a preemption save) ranks last
    # best_fn also makes orbax store each step's metrics (for BestN).
    best = dict(best_fn=lambda metrics: metrics.get(name, worst), best_mode=mode)
    policies.append(
        ocp.checkpoint_managers.BestN(
            get_metric_fn=best["best_fn"],
            reverse=mode == "min",
            n=1,
            keep_checkpoints_without_metrics=False,
        )
    )
  return ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      todelete_subdir=_DELETING_DIR,
      **best,
  )


def _worst(mode: str) -> float:
  return math.inf if mode == "min" else -math.inf


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


def _is_legacy(step_dir: str) -> bool:
  """Whether a step without an integrity record was written before records existed: its
  orbax step metadata reads and lacks `_SEALED_MARK` (unreadable metadata: not legacy)."""
  try:
    with open(os.path.join(step_dir, _STEP_METADATA)) as f:
      metadata = json.load(f)
    return _SEALED_MARK not in (metadata.get("custom_metadata") or {})
  except (OSError, ValueError, AttributeError):
    return False


def _legacy_record(step_dir: str, step: int) -> dict[str, Any]:
  """The integrity record of a legacy step, built from what it holds now: file digests,
  the JSON items, and the arrays' names, shapes and dtypes (no value digests)."""
  with _quiet_about_step_metadata(), ocp.Checkpointer(ocp.StandardCheckpointHandler()) as reader:
    metadata = reader.metadata(os.path.join(step_dir, "state")).item_metadata.tree
  arrays = {leaf.name: {"shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype)),
                        "sha256": None} for leaf in jax.tree.leaves(metadata)}
  with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
    items = {name: checkpointer.restore(os.path.join(step_dir, name))
             for name in ("data_iter", "config")}
  metrics_file = os.path.join(step_dir, "metrics", "metrics")
  if os.path.exists(metrics_file):
    with open(metrics_file) as f:
      items["metrics"] = json.load(f)
  else:
    items["metrics"] = {}
  return integrity.build_record(step_dir, step, arrays, items)


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


class _DropFailedSaveTracebacks(logging.Filter):
  """Orbax logs the traceback of a failed background write (hundreds of lines), and asyncio
  logs one for each of its write tasks whose error nobody retrieved ('Task exception was
  never retrieved', when the task is collected); the run reports that failure itself, in
  one line (SaveError)."""

  def filter(self, record: logging.LogRecord) -> bool:
    orbax = f"{os.sep}orbax{os.sep}"
    return not (record.exc_info and (orbax in record.pathname or orbax in record.getMessage()))


def _quiet_about_failed_saves() -> None:
  for logger in (absl_logging.get_absl_logger(), logging.getLogger("asyncio")):
    if not any(isinstance(f, _DropFailedSaveTracebacks) for f in logger.filters):
      logger.addFilter(_DropFailedSaveTracebacks())


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

  Opening one checks every step against its integrity record. With `read_only` nothing is
  created, deleted, moved or written, even the directory; damaged steps are then left in
  place and skipped. A writable instance (one per run, under the workdir's lock) moves them
  aside when it opens.
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
    self.damaged: dict[int, str] = {}  # damaged steps left in place (read_only)
    self._train_config = train_config
    self._records: dict[int, dict[str, Any]] = {}  # intact steps' integrity records
    self._legacy: set[int] = set()  # steps from before integrity records (built, not read)
    self._pending: tuple[int, dict[str, Any], dict[str, Any]] | None = None  # saving
    self._manager = None
    _silence_failed_read_callbacks()
    exists = os.path.isdir(self.directory)
    if jax.process_count() > 1:  # all look before one creates it: orbax's collectives differ
      multihost_utils.sync_global_devices("mlvae_jax:checkpoints_looked_at")
    if exists:
      self._scan()
    if read_only:
      return
    if exists:
      self._remove_leftovers()
      for step, problem in sorted(self.damaged.items()):
        self._set_aside(step, problem)
      self.damaged = {}
      self._seal_legacy()
    _quiet_about_failed_saves()
    with _quiet_about_step_metadata():
      self._manager = ocp.CheckpointManager(
          self.directory, options=_options(self._train_config), item_handlers=_handlers())

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _scan(self) -> None:
    """Checks every step directory against its integrity record (intact or damaged)."""
    names = os.listdir(self.directory) if os.path.isdir(self.directory) else []
    training = self.read_only and _on_every_process(run_lock.holder(self.workdir) is not None)
    for step in sorted(int(name) for name in names if name.isdigit()):
      if step in self._records or step in self.damaged:
        continue
      problem, record = None, None
      try:
        record = integrity.read_record(self._step_dir(step))
        integrity.verify_files(self._step_dir(step), record)
      except integrity.IncompleteError as e:
        if _is_legacy(self._step_dir(step)):
          problem, record = self._read_legacy(step)
        elif training:
          continue  # the running training is completing it: not damage, not ours yet
        else:
          problem = str(e)
      except integrity.IntegrityError as e:
        problem = str(e)
      if not os.path.isdir(self._step_dir(step)):
        continue  # rotated out by a running training while we looked
      if _on_every_process(problem is None):
        self._records[step] = record
      else:
        self.damaged[step] = problem or _UNREADABLE_ELSEWHERE

  def _read_legacy(self, step: int) -> tuple[str | None, dict[str, Any] | None]:
    """(problem, record) of a legacy step: the record built from what it holds now, with a
    one-line notice, or why it cannot be read (then it is damaged)."""
    try:
      record = _legacy_record(self._step_dir(step), step)
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise bare Exception
      return f"written before integrity records, and unreadable: {_reason(e)}", None
    self._legacy.add(step)
    how = ("a training run in this workdir seals it" if self.read_only else
           f"sealed now with a record of what it holds ({integrity.RECORD_FILE})")
    print(f"checkpoint {step} of {self.directory} was written before integrity records; its "
          f"values cannot be checked against the save ({how})", file=sys.stderr)
    return None, record

  def _seal_legacy(self) -> None:
    """Writes the records built for legacy steps, so later damage to them is caught."""
    for step in sorted(self._legacy):
      if jax.process_index() == 0:
        integrity.write_record(self._step_dir(step), self._records[step])
    if self._legacy and jax.process_count() > 1:
      multihost_utils.sync_global_devices("mlvae_jax:sealed_legacy")
    self._legacy = set()

  def _set_aside(self, step: int, problem: str) -> None:
    """Reports a damaged step in one line; moves it to WORKDIR/checkpoints_damaged."""
    self._records.pop(step, None)
    where = f"checkpoint {step} of {self.directory} is damaged ({problem})"
    if self.read_only:
      print(f"{where}; skipped (a training run in this workdir moves it aside)", file=sys.stderr)
      return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    destination = os.path.join(damaged_dir(self.workdir), f"{step}-{stamp}")
    if jax.process_index() == 0:
      os.makedirs(damaged_dir(self.workdir), exist_ok=True)
      os.rename(self._step_dir(step), destination)
      print(f"{where}; moved to {destination}", file=sys.stderr)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"mlvae_jax:set_aside_{step}")

  def steps(self) -> list[int]:
    """Steps of the intact checkpoints, ascending (incomplete saves, moved-away and damaged
    steps are not listed)."""
    return sorted(self._records)

  def saved_config(self, step: int) -> dict[str, Any]:
    """The config dict stored with checkpoint `step` (keys added since: their defaults)."""
    return configs.fill_later_defaults(self._records[step]["items"]["config"]["value"])

  def check_shapes(self, step: int, abstract_state: Any) -> None:
    """Fails with one line naming the first leaf whose stored shape differs from the target."""
    stored = {name: tuple(a["shape"]) for name, a in self._records[step]["arrays"].items()}
    leaves, _ = jax.tree_util.tree_flatten_with_path(abstract_state)
    expected = {leaf_name(path): tuple(leaf.shape) for path, leaf in leaves}
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
    """(state, this process's iterator state or None) of checkpoint `step`, every value
    checked against the integrity record (IntegrityError if one differs).

    `abstract_state` holds `jax.ShapeDtypeStruct`s with the shardings wanted now, so a
    checkpoint saved on 8 devices restores onto 1 (or any mesh) without going through host.
    A state holding NaN or infinite values is refused (SetupError).
    """
    self.check_shapes(step, abstract_state)
    record = self._records[step]
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
      state = checkpointer.restore(os.path.join(self._step_dir(step), "state"),
                                   args=ocp.args.StandardRestore(abstract_state))
    integrity.verify_values(record, state)
    bad = nonfinite.nonfinite_paths(state)
    if bad:
      raise SetupError(
          f"checkpoint {self.directory}/{step} holds non-finite values (first in "
          f"'{leaf_name(bad[0])}'): the run had diverged when it was saved; resume or "
          "evaluate an earlier checkpoint (move this one out of the directory)"
      )
    if not with_data:
      return state, None
    per_process = record["items"]["data_iter"]["value"]["processes"]
    if len(per_process) != jax.process_count():
      raise SetupError(
          f"checkpoint {self.directory}/{step} was written by {len(per_process)} processes and "
          f"this run has {jax.process_count()}; resume with the same number of processes"
      )
    return state, per_process[jax.process_index()]

  def restore_readable(
      self,
      abstract_state: Any,
      *,
      preferred: Sequence[int] = (),
      fallback: bool = True,
      with_data: bool = True,
  ) -> tuple[int, Any, Any | None]:
    """(step, state, iterator state) of the first of `preferred`, then (with `fallback`) of
    the newest intact checkpoint. Each damaged one is reported in one line (and moved aside
    when writable); one a running training rotated away while it was read is passed over
    (the directory is looked at again once). SetupError if none is intact, or for a
    mismatch with the config."""
    for attempt in range(2):
      newest_first = sorted(self.steps(), reverse=True)
      order = [s for s in preferred if s in newest_first]
      order += [s for s in newest_first if s not in order] if fallback else []
      rotated = False
      for step in order:
        problem = None
        try:
          state, data_state = self.restore(step, abstract_state, with_data)
        except SetupError:
          raise
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise bare Exception
          problem = _reason(e)
        if _on_every_process(problem is None):
          self._report_skipped(newer_than=step)
          return step, state, data_state
        if self.read_only and not os.path.isdir(self._step_dir(step)):
          self._records.pop(step)
          rotated = True
        elif self.read_only:
          self._records.pop(step)
          self.damaged[step] = problem or _UNREADABLE_ELSEWHERE
        else:
          self._set_aside(step, problem or _UNREADABLE_ELSEWHERE)
          self._manager.reload()
      if not (rotated and attempt == 0):
        break
      self._scan()  # a running training saved newer steps meanwhile
    self._report_skipped(newer_than=-1)
    if not fallback:
      raise SetupError(f"checkpoint {', '.join(map(str, preferred))} of {self.directory} is "
                       "not intact (see the line above); choose another step")
    if self.read_only:
      raise SetupError(f"no checkpoint of {self.directory} is intact (see the lines above)")
    raise SetupError(
        f"no checkpoint of {self.directory} is intact (see the lines above; they are in "
        f"{damaged_dir(self.workdir)}); relaunch to start afresh"
    )

  def _report_skipped(self, newer_than: int) -> None:
    """One line for each damaged step a read-only reader skipped above `newer_than`."""
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
    """Saves all three items (asynchronously; all processes must call it); the integrity
    record follows when the save completes (`poll`, `close` or the next save).

    Refuses a state with NaN or infinite values (NonFiniteError); non-finite metrics are
    left out, so they never rank a checkpoint as the best. SaveError if the previous save
    failed.
    """
    if self.read_only:
      raise RuntimeError(f"checkpoints of {self.directory} were opened read-only")
    bad = nonfinite.nonfinite_paths(state)
    if bad:
      raise nonfinite.NonFiniteError(
          f"checkpoint {step} was not saved: '{leaf_name(bad[0])}' holds NaN or infinite "
          f"values; the last good checkpoint is {self.latest_description()}"
      )
    self.finish_pending()  # the previous save has renamed what it rotated out
    self._remove_leftovers()
    self._check_writable(step)
    finite = {k: float(v) for k, v in (metrics or {}).items() if math.isfinite(v)}
    items = {
        "data_iter": {"processes": _gather_process_states(data_state)},
        "config": json.loads(config.to_json_best_effort()),
        "metrics": finite,
    }
    self._manager.save(step, force=True, metrics=finite, custom_metadata={_SEALED_MARK: True},
                       args=ocp.args.Composite(
                           state=ocp.args.StandardSave(state),
                           data_iter=ocp.args.JsonSave(items["data_iter"]),
                           config=ocp.args.JsonSave(items["config"]),
                       ))
    self._pending = (step, integrity.array_record(state), items)

  def _check_writable(self, step: int) -> None:
    """SaveError unless a file can be created in the directory: orbax, asked to save where it
    cannot create its temporary directory, waits 5 minutes in a barrier before failing."""
    probe = os.path.join(self.directory, f".probe-{jax.process_index()}-{os.getpid()}")
    problem = None
    try:
      with open(probe, "w"):
        pass
      os.remove(probe)
    except OSError as e:
      problem = f"{type(e).__name__}: {e}"
    if not _on_every_process(problem is None):
      raise SaveError(self._failed(step, problem))

  def _failed(self, step: int, problem: str | None) -> str:
    return (f"checkpoint {step} could not be written to {self.directory} "
            f"({problem or _UNREADABLE_ELSEWHERE}); the run stops here, earlier checkpoints are "
            "intact: free disk space or fix its permissions, then run the same command again")

  def poll(self) -> None:
    """Completes the pending save if orbax has finished it (a cheap check; call often).
    With several processes it waits for the next save or `close`: processes see a save end
    at different moments, and completing one is collective."""
    if jax.process_count() > 1:
      return
    if self._pending and not self._manager.is_saving_in_progress():
      self.finish_pending()

  def finish_pending(self) -> None:
    """Waits for the pending save, checks it, and writes its integrity record (last);
    SaveError (one line) if it failed."""
    if not self._pending:
      return
    step, arrays, items = self._pending
    self._pending = None
    problem = None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
      if not os.path.isdir(self._step_dir(step)):
        raise FileNotFoundError(f"{self._step_dir(step)} was not committed")
      if jax.process_index() == 0:
        record = integrity.build_record(self._step_dir(step), step, arrays, items)
        integrity.write_record(self._step_dir(step), record)
    except Exception as e:  # noqa: BLE001 - orbax reports a failed write as bare Exception
      problem = _reason(e)
    if not _on_every_process(problem is None):
      raise SaveError(self._failed(step, problem))
    self._records = {s: r for s, r in self._records.items() if os.path.isdir(self._step_dir(s))}
    self._records[step] = integrity.read_record(self._step_dir(step))

  def add_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
    """Adds metrics evaluated after checkpoint `step` was recorded (the final step is saved
    before the end-of-run evaluators) to its integrity record, for `best_step`."""
    finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
    if not finite or step not in self._records:
      return
    record = self._records[step]
    merged = {**record["items"]["metrics"]["value"], **finite}
    if jax.process_index() == 0:
      integrity.replace_item(self._step_dir(step), record, "metrics", merged)
    self._records[step] = {**record, "items": {**record["items"], "metrics": {"value": merged}}}

  def none_intact(self) -> SetupError:
    """The one-line error of a workdir whose checkpoints are all damaged."""
    damaged = "; ".join(f"{step}: {problem}" for step, problem in sorted(self.damaged.items()))
    return SetupError(
        f"no checkpoint of {self.directory} is intact ({damaged}); move them out of the "
        "directory (or relaunch with --config.train.resume=restart) to start afresh"
    )

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
    """'step S in DIR' for the newest intact (or now being written) checkpoint, or 'none'."""
    steps = self.steps() + ([self._pending[0]] if self._pending else [])
    if not steps:
      return f"none (no checkpoint was saved in {self.directory})"
    return f"step {steps[-1]} in {self.directory}"

  def best_step(self) -> int | None:
    """The intact step best by keep_best_metric (the latest if none is set or none has the
    metric); None if none is intact."""
    steps = self.steps()
    metric = self._train_config.keep_best_metric if self._train_config else ""
    if not metric or not steps:
      return max(steps, default=None)
    name, mode = best_mode(metric)
    metrics = {s: self._records[s]["items"]["metrics"]["value"] for s in steps}
    value = lambda s: metrics[s].get(name, _worst(mode))  # noqa: E731
    ranked = sorted(steps, key=lambda s: (value(s), s))
    best = ranked[0] if mode == "min" else ranked[-1]
    return best if math.isfinite(value(best)) else steps[-1]

  def close(self) -> None:
    """Completes the pending save (SaveError if it failed); call before the process exits."""
    if not self._manager:
      return
    try:
      self.finish_pending()
    finally:
      self._remove_leftovers()
      self._manager.close()
