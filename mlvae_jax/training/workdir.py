"""What a run checks and decides before it writes anything to its workdir.

Every bad input (unknown key, unwritable directory, another config's checkpoints) must end
the run with one line and leave the workdir as it was, so all checks here only read; the
single writer, `write_config`, runs after them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import ml_collections

from mlvae_jax.config_helpers import SetupError, flat_items  # SetupError: raised here, shared

CONFIG_FILE = "config.json"
FINAL_METRICS_FILE = "final_metrics.json"
RESUME_MODES = ("auto", "restart", "never")
# Keys a resumed run may change: they steer logging, evaluation, saving or placement, not
# the trajectory of the parameters.
RESUMABLE_KEYS = (
    "train.num_steps", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.keep_best_metric", "train.resume", "train.debug_checks",
    "train.on_nonfinite", "train.max_nonfinite_in_a_row",
    "mesh.", "evals.", "evals_split", "data.num_workers", "data.data_dir", "data.manual_dir",
    "data.device_resident", "train.steps_per_call",
)


def check_name(workdir: str) -> None:
  """Fails (one line) for a workdir path that is empty or not UTF-8: orbax and tensorstore
  take paths as UTF-8 text, so such a run would fail at its first save."""
  if not workdir or not workdir.strip():
    raise SetupError("--workdir is empty; give the directory of the run")
  try:
    workdir.encode("utf-8")
  except UnicodeEncodeError:
    raise SetupError(f"workdir {workdir.encode('utf-8', 'replace').decode()!r} is not UTF-8 "
                     "text (checkpoints cannot be written there); use a UTF-8 path") from None


def check_writable(workdir: str) -> None:
  """Fails if `workdir` is no valid name (check_name) or cannot be created or written,
  without creating anything."""
  check_name(workdir)
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise SetupError(f"workdir {workdir} is not writable: {probe} is not a directory")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise SetupError(f"workdir {workdir} is not writable: no write permission on {probe}")


@dataclasses.dataclass(frozen=True)
class ResumePlan:
  """What to do with checkpoints found in the workdir."""

  resume_step: int | None  # latest checkpoint to continue from, or None for a fresh start
  discard_steps: tuple[int, ...] = ()  # checkpoints a 'restart' deletes before training


def config_differences(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
  """'key: old -> new' for every trajectory-relevant key that differs between two configs."""
  new_items, old_items = flat_items(new), flat_items(old)
  diffs = []
  for key in sorted(set(new_items) | set(old_items)):
    if key.startswith(RESUMABLE_KEYS):
      continue
    if new_items.get(key, "<absent>") != old_items.get(key, "<absent>"):
      diffs.append(f"{key}: {old_items.get(key, '<absent>')!r} -> {new_items.get(key, '<absent>')!r}")
  return diffs


def summarise_differences(diffs: Sequence[str], shown: int = 3) -> str:
  """The first few of `config_differences`, for a one-line error."""
  more = f"; and {len(diffs) - shown} more" if len(diffs) > shown else ""
  return "; ".join(diffs[:shown]) + more


def plan_resume(
    config: ml_collections.ConfigDict,
    workdir: str,
    steps: list[int],
    saved_config: Mapping[str, Any] | None,
) -> ResumePlan:
  """Applies config.train.resume to the checkpoints (`steps`) already in `workdir`.

  'auto' continues from the latest checkpoint if it was written by this config (up to
  `RESUMABLE_KEYS`) and refuses otherwise; 'restart' discards them; 'never' refuses to run
  where checkpoints exist.
  """
  mode = config.train.resume
  if mode not in RESUME_MODES:
    raise SetupError(f"config.train.resume={mode!r} is unknown; use one of {RESUME_MODES}")
  if not steps:
    return ResumePlan(resume_step=None)
  where = f"workdir {workdir} holds checkpoints at steps {steps}"
  if mode == "restart":
    return ResumePlan(resume_step=None, discard_steps=tuple(steps))
  if mode == "never":
    raise SetupError(
        f"{where} and config.train.resume='never'; use another --workdir or "
        "--config.train.resume=restart to discard them"
    )
  diffs = config_differences(config.to_dict(), saved_config or {})
  if diffs:
    raise SetupError(
        f"{where} of another config ({summarise_differences(diffs)}); use another --workdir or "
        "--config.train.resume=restart to discard them"
    )
  return ResumePlan(resume_step=max(steps))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the full config to WORKDIR/config.json (the record of what this run is)."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> dict[str, Any] | None:
  """The JSON object in `path`, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
