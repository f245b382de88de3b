"""Where training metrics go: WORKDIR/metrics.jsonl, TensorBoard events and a progress bar.

Only process 0 writes (the others get a writer that does nothing), so a multi-host run has
one record. TensorBoard events come from tensorboardX, which needs no TensorFlow. A resumed
run first drops records past the step it resumes from, so the files read as one run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Mapping

import tqdm
from tensorboardX import SummaryWriter

from mlvae_jax.config_helpers import SetupError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# tensorboardX warns once per NaN scalar it writes; a diverged run's one-line report says it.
logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)


def _records(path: str, rewriting: bool = False) -> list[dict]:
  """The records of a metrics file; a torn last line (a kill or a full disk during a write)
  is dropped, with one line on stderr. A damaged line before the last is an error."""
  with open(path, "rb") as f:
    lines = [line for line in f.read().split(b"\n") if line.strip()]
  records = []
  for number, line in enumerate(lines, 1):
    try:
      record = json.loads(line.decode())
      record["step"] = int(record["step"])
    except (ValueError, KeyError, TypeError) as e:
      if number < len(lines):
        raise SetupError(f"{path} line {number} is damaged ({type(e).__name__}); move the "
                         "file away to start a new record") from None
      what = "dropped" if rewriting else "ignored"
      print(f"{path}: the torn last line (a write interrupted) is {what}", file=sys.stderr)
      continue
    records.append(record)
  return records


def read_metrics(workdir: str) -> list[dict]:
  """All records of WORKDIR/metrics.jsonl ([] if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  return _records(path)


def _truncate_after(path: str, step: int) -> None:
  """Keeps only records up to `step` (a resumed run rewrites what came after)."""
  if not os.path.exists(path):
    return
  kept = [r for r in _records(path, rewriting=True) if r["step"] <= step]
  with open(path, "w") as f:
    f.writelines(json.dumps(record) + "\n" for record in kept)


def _json_value(value: float) -> float | str:
  """JSON has no NaN or inf: write them as strings rather than produce invalid JSON."""
  value = float(value)
  return value if math.isfinite(value) else str(value)


class MetricsWriter:
  """Writes scalars per step and shows progress; quiet unless `enabled` (process 0)."""

  def __init__(self, workdir: str, *, total_steps: int, start_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self._bar = tqdm.tqdm(
        total=total_steps,
        initial=start_step,
        unit="step",
        dynamic_ncols=True,
        disable=None if enabled else True,  # None: silent when stderr is not a terminal
    )
    if not enabled:
      return
    path = os.path.join(workdir, METRICS_FILE)
    _truncate_after(path, start_step)
    self._file = open(path, "a")
    self._tensorboard = SummaryWriter(
        os.path.join(workdir, TENSORBOARD_DIR), purge_step=start_step or None
    )

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """One JSONL record and one TensorBoard scalar per metric."""
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _json_value(v) for k, v in metrics.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    for key, value in metrics.items():
      self._tensorboard.add_scalar(key, float(value), global_step=step)
    self._tensorboard.flush()

  def advance(self, steps: int, summary: Mapping[str, float] | None = None) -> None:
    """Moves the progress bar on; `summary` (e.g. the loss) is shown beside it."""
    if summary:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in summary.items()}, refresh=False)
    self._bar.update(steps)

  def close(self) -> None:
    self._bar.close()
    if self.enabled:
      self._file.close()
      self._tensorboard.close()
