"""Light helpers for config files: dotted paths, sweep points, loading an experiment file and
explaining a bad override in one line.

Experiment files import this module and `configs` only (no jax), so loading a config is fast.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import os
import re
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import ml_collections

Point = dict[str, Any]  # a sweep point: {dotted key: value}


class SetupError(ValueError):
  """A run cannot start as configured; the message is one line: what, where, how to fix."""


def get_path(config: Mapping[str, Any], path: str) -> Any:
  """The value at a dotted path, e.g. get_path(config, 'train.num_steps'); KeyError if absent."""
  value: Any = config
  for part in path.split("."):
    value = value[part]
  return value


def set_path(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  """Sets an existing leaf at a dotted path; KeyError if it is absent or not a leaf."""
  *parents, leaf = path.split(".")
  node = get_path(config, ".".join(parents)) if parents else config
  if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
    raise KeyError(path)
  node[leaf] = value


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
  return {path: get_path(config, path) for path in flat_keys(config)}


def product(axes: Mapping[str, Sequence[Any]]) -> list[Point]:
  """Every combination of the values of `axes` ({dotted key: values}), first key slowest."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


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
