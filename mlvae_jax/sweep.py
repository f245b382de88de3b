"""Sweeps: lists of config overrides, run locally P at a time or printed for a scheduler.

A sweep is what `get_sweep(arg)` returns (in the experiment file or a separate sweep file):
a list of {dotted key: value} points, usually built with `config_helpers.product`. Each point runs as its
own `launch.py` process in WORKDIR/<point name>; a point whose final_metrics.json exists is
finished and not rerun when the sweep is run again (status "done earlier"). The summary goes
to WORKDIR/sweep.csv and WORKDIR/sweep.md; a sweep with a `seed` axis also gets the mean and
95% interval over seeds of every metric (results.json/.csv/.md, mlvae_jax/results_table.py).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

import ml_collections

from mlvae_jax.config_helpers import (
    Point, SetupError, load_module, set_path, split_config_spec, unknown_key_message,
)
from mlvae_jax import results_table
from mlvae_jax.evaluation.report import headline_metrics
from mlvae_jax.training.preemption import RESUMABLE_EXIT_CODE
from mlvae_jax.training.run_lock import RunLock
from mlvae_jax.training.workdir import FINAL_METRICS_FILE, check_writable, read_json

CSV_FILE = "sweep.csv"
MARKDOWN_FILE = "sweep.md"
LOG_DIR = "logs"
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def load_points(path: str, arg: str | None) -> list[Point]:
  """The points of `get_sweep(arg)` in the file at `path`."""
  get_sweep = getattr(load_module(path), "get_sweep", None)
  if get_sweep is None:
    raise SetupError(f"{path} has no get_sweep(arg=None); add one or pass --sweep=FILE")
  points = list(get_sweep(arg))
  if not points:
    raise SetupError(f"get_sweep({arg!r}) in {path} returned no points")
  return points


def format_value(value: Any) -> str:
  """A value as a command-line override spells it."""
  if isinstance(value, bool):
    return str(value).lower()
  return str(value)


def point_name(point: Point) -> str:
  """A directory name for a point, e.g. 'objective.variant=vae,seed=1'."""
  name = ",".join(f"{key}={format_value(value)}" for key, value in point.items())
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name) or "default"


def apply_overrides(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
  """A copy of `config` with the point's overrides; unknown keys or bad types fail."""
  config = ml_collections.ConfigDict(config.to_dict(), type_safe=True)
  config.lock()
  for key, value in point.items():
    try:
      set_path(config, key, value)
    except (KeyError, AttributeError):
      raise SetupError(unknown_key_message(config, key)) from None
    except TypeError as e:
      raise SetupError(f"sweep value {key}={value!r} has the wrong type: {e}") from None
  return config


@dataclasses.dataclass(frozen=True)
class Job:
  """One point: where it runs and the command that runs it."""

  name: str
  point: Point
  workdir: str
  command: tuple[str, ...]

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, FINAL_METRICS_FILE))


def make_jobs(base_command: Sequence[str], workdir: str, points: Sequence[Point]) -> list[Job]:
  """A job per point: `base_command` plus --workdir and the point's --config overrides."""
  names = [point_name(p) for p in points]
  if len(set(names)) != len(names):
    raise SetupError("the sweep has duplicate points; make every point's overrides distinct")
  jobs = []
  for name, point in zip(names, points):
    point_dir = os.path.join(os.path.abspath(workdir), name)
    overrides = [f"--config.{k}={format_value(v)}" for k, v in point.items()]
    command = (*base_command, f"--workdir={point_dir}", "--mode=train", *overrides)
    jobs.append(Job(name, point, point_dir, command))
  return jobs


def shell_command(job: Job) -> str:
  """The job as one shell line (for --sweep_print_only)."""
  return " ".join(shlex.quote(part) for part in job.command)


class _StopSignals:
  """While entered, a stop signal is recorded (`name`) instead of ending the sweep. (The
  training runs' StopSignals asks JAX about processes, which would claim the devices here.)"""

  def __init__(self):
    self.name: str | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> _StopSignals:
    for signum in _STOP_SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.name = self.name or signal.Signals(signum).name

  def __exit__(self, *exc_info: object) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def run_jobs(jobs: Sequence[Job], workdir: str, parallel: int) -> dict[str, str]:
  """Runs unfinished jobs, `parallel` at a time.

  Returns {name: 'done' | 'done earlier' | 'failed' | 'stopped' | 'pending'}.

  Each job's output goes to WORKDIR/logs/<name>.log, outside the point's own workdir, so a
  point that refuses to start leaves its workdir untouched. A stop signal (SIGTERM, SIGINT,
  SIGHUP) is passed on to the running points as SIGTERM: each saves its step and exits
  (status 'stopped'), no further point starts, and the caller still writes the table.
  """
  status = {job.name: "done earlier" for job in jobs if job.finished}
  pending = [job for job in jobs if not job.finished]
  os.makedirs(os.path.join(workdir, LOG_DIR), exist_ok=True)
  running: list[tuple[Job, subprocess.Popen, Any]] = []
  with _StopSignals() as signals:
    forwarded = False
    while pending or running:
      while pending and len(running) < parallel and not signals.name:
        job = pending.pop(0)
        log = open(os.path.join(workdir, LOG_DIR, job.name + ".log"), "a")  # keeps earlier tries
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shell_command(job)}\n")
        log.flush()
        running.append((job, subprocess.Popen(job.command, stdout=log, stderr=subprocess.STDOUT),
                        log))
        print(f"sweep: started {job.name}", file=sys.stderr)
      if signals.name and not forwarded:
        print(f"sweep: {signals.name}: stopping {len(running)} running point(s); "
              f"{len(pending)} not started", file=sys.stderr)
        for _, process, _ in running:
          process.send_signal(signal.SIGTERM)
        forwarded, pending = True, []
      time.sleep(0.2)
      for entry in list(running):
        job, process, log = entry
        if process.poll() is None:
          continue
        log.close()
        running.remove(entry)
        status[job.name] = ("done" if process.returncode == 0 and job.finished else "stopped"
                            if process.returncode == RESUMABLE_EXIT_CODE else "failed")
        print(f"sweep: {job.name} {status[job.name]} (exit {process.returncode})", file=sys.stderr)
  return status


def summarise(jobs: Sequence[Job], status: Mapping[str, str], workdir: str) -> str:
  """Writes sweep.csv (every final metric per point) and sweep.md (the headline metrics);
  returns the Markdown table."""
  keys = list(dict.fromkeys(k for job in jobs for k in job.point))
  finals = {job.name: read_json(os.path.join(job.workdir, FINAL_METRICS_FILE)) or {} for job in jobs}

  def table(metrics: Sequence[str]) -> list[list[Any]]:
    rows = [[job.name, status.get(job.name, "pending"), *(job.point.get(k, "") for k in keys),
             *(finals[job.name].get(m, "") for m in metrics)] for job in jobs]
    return [["point", "status", *keys, *metrics], *rows]

  every = sorted({m for final in finals.values() for m in final if m != "step"})
  with open(os.path.join(workdir, CSV_FILE), "w", newline="") as f:
    csv.writer(f).writerows(table(every))
  headline = list(dict.fromkeys(m for final in finals.values() for m in headline_metrics(final)))
  header, *rows = table(headline)
  cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
  markdown = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, MARKDOWN_FILE), "w") as f:
    f.write(markdown)
  if results_table.write(workdir, [(job.point, job.workdir) for job in jobs]):  # a seed axis
    with open(os.path.join(workdir, results_table.MARKDOWN_FILE)) as f:
      markdown += "\n" + f.read()
  return markdown


def launch(
    config: ml_collections.ConfigDict,
    *,
    config_spec: str,
    overrides: Mapping[str, Any],
    workdir: str,
    sweep_file: str | None,
    parallel: int,
    print_only: bool,
    launcher: Sequence[str],
) -> int:
  """`launch.py --mode=sweep`: checks every point, then prints or runs them; returns the
  exit status (1 if a point failed).

  `launcher` starts a run (e.g. [python, launch.py]); `config_spec` and `overrides` are the
  --config and --config.* flags of the sweep, passed on to every point.
  """
  if parallel < 1:
    raise SetupError(f"--sweep_parallel={parallel}; use 1 or more processes")
  path, arg = split_config_spec(config_spec)
  if sweep_file:  # `--sweep=FILE[:ARG]`: its own arg, else the config's
    path, sweep_arg = split_config_spec(sweep_file)
    arg = arg if sweep_arg is None else sweep_arg
  points = load_points(path, arg)
  for point in points:
    apply_overrides(config, point)
  shared = [f"--config.{key}={format_value(value)}" for key, value in overrides.items()]
  jobs = make_jobs([*launcher, f"--config={config_spec}", *shared], workdir, points)
  if print_only:
    print("\n".join(shell_command(job) for job in jobs))
    return 0
  check_writable(workdir)
  lock = RunLock(workdir)  # two sweeps in one workdir would mark each other's points failed
  lock.acquire()
  lock.announce()
  try:
    status = run_jobs(jobs, workdir, parallel)
    print(summarise(jobs, status, workdir))
  finally:
    lock.release()
  if "failed" in status.values():
    return 1
  stopped = {"stopped", "pending"} & set(status.values())
  return RESUMABLE_EXIT_CODE if stopped else 0
