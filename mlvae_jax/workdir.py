"""What a run checks and decides before it writes anything to its workdir.

Every bad input (unknown key, unwritable directory, another config's checkpoints) must end
the run with one line and leave the workdir as it was, so all checks here only read; the
single writer, `write_config`, runs after them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
import re
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import ml_collections

CONFIG_FILE = "config.json"
FINAL_METRICS_FILE = "final_metrics.json"
RESUME_MODES = ("auto", "restart", "never")
# Keys a resumed run may change: they steer logging, evaluation, saving or placement, not
# the trajectory of the parameters.
RESUMABLE_KEYS = (
    "train.num_steps", "train.log_every", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.keep_best_metric", "train.resume", "train.debug_checks",
    "mesh.", "eval.", "data.num_workers", "data.data_dir", "data.manual_dir",
)


class SetupError(ValueError):
  """A run cannot start as configured; the message is one line: what, where, how to fix."""


def flat_keys(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
  """Dotted paths of every leaf of a (nested) config, e.g. 'train.num_steps'."""
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      yield from flat_keys(value, path + ".")
    else:
      yield path


def flat_items(config: Mapping[str, Any]) -> dict[str, Any]:
  """{dotted path: leaf value} of a nested config."""
  out = {}
  for path in flat_keys(config):
    value: Any = config
    for part in path.split("."):
      value = value[part]
    out[path] = value
  return out


def unknown_key_message(config: Mapping[str, Any], key: str) -> str:
  """'unknown config key ...; did you mean ...?' with the nearest valid dotted path."""
  keys = list(flat_keys(config))
  close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
  if not close:  # a typo in the section name: match on the leaf instead
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1]
  sections = ", ".join(dict.fromkeys(k.split(".")[0] for k in keys))
  hint = f"did you mean '{close[0]}'?" if close else f"valid keys start with one of: {sections}"
  return f"unknown config key '{key}'; {hint}"


def load_module(path: str) -> ModuleType:
  """Imports a Python file by path (an experiment or sweep file)."""
  if not os.path.isfile(path):
    raise SetupError(f"{path} does not exist; give an experiment file such as experiments/digits.py")
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def split_config_spec(spec: str) -> tuple[str, str | None]:
  """'experiments/digits.py:smoke,x=1' -> ('experiments/digits.py', 'smoke,x=1')."""
  path, _, arg = spec.partition(":")
  return path, arg or None


def describe_flag_error(argv: Sequence[str], error: Exception) -> str:
  """One line for a failed command line: the unknown key and its nearest valid one, or the
  override whose value has the wrong type."""
  specs = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  message = str(error).strip().splitlines()[0].strip("'\"")
  if not specs:
    return message
  try:
    path, arg = split_config_spec(specs[-1])
    config = load_module(path).get_config(arg)
  except Exception as e:  # the config file itself is broken: say so
    return f"cannot load --config={specs[-1]}: {type(e).__name__}: {str(e).splitlines()[0]}"
  valid = flat_items(config)
  for override in overrides:
    key, _, raw = override.partition("=")
    if key not in valid and not any(k.startswith(key + ".") for k in valid):
      return unknown_key_message(config, key)
    if key in valid and f"--config.{override}" in message:
      expected = type(valid[key]).__name__
      return f"--config.{override}: config.{key} must be of type {expected}, got {raw!r}"
  return re.sub(r"^flag ", "", message)


def check_writable(workdir: str) -> None:
  """Fails if `workdir` cannot be created or written, without creating anything."""
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
