"""The integrity record of a checkpoint: what every file and every saved value must be.

A checkpoint's arrays are compressed frames without checksums, so a flipped bit may load as
a different number, silently. After orbax has committed a step, the run writes
`integrity.json` into it, last and atomically: the SHA-256 of every file of the step, and of
every array (its dtype, shape and bytes) and JSON item (data iterator, config, metrics) as
they were saved. A step without it is incomplete. Readers check the files before reading
anything, and the restored values against their digests before using them; any mismatch,
missing file or unreadable record is a damaged checkpoint (`IntegrityError`, one line).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import jax
import numpy as np

RECORD_FILE = "integrity.json"
_FORMAT = 1
_CHUNK = 1 << 20


class IntegrityError(Exception):
  """A checkpoint's files or values differ from its integrity record (or it has none)."""


class IncompleteError(IntegrityError):
  """A step without its record: its save never completed (or is completing now)."""


def leaf_name(path: tuple[Any, ...]) -> str:
  """The dotted name orbax gives a leaf, e.g. 'opt_state.1.0.mu.w'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return ".".join(parts)


def _array_digest(value: Any) -> str:
  array = np.ascontiguousarray(np.asarray(value))
  digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
  digest.update(array.tobytes())
  return digest.hexdigest()


def array_record(state: Any) -> dict[str, dict[str, Any]]:
  """{leaf name: {shape, dtype, sha256}} of a state. A leaf split across processes (no
  process holds all of it) gets no value digest: its files' digests cover it."""
  record = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    whole = getattr(leaf, "is_fully_addressable", True)
    record[leaf_name(path)] = {
        "shape": list(np.shape(leaf)), "dtype": str(np.dtype(leaf.dtype)),
        "sha256": _array_digest(leaf) if whole else None,
    }
  return record


def json_digest(value: Any) -> str:
  """The digest of a JSON value, independent of key order."""
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def file_digests(step_dir: str) -> dict[str, str]:
  """{path relative to the step: SHA-256} of every file of a step but the record itself."""
  digests = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, step_dir)
      if relative != RECORD_FILE:
        digests[relative] = _file_digest(path)
  return dict(sorted(digests.items()))


def build_record(step_dir: str, step: int, arrays: Mapping[str, Any],
                 items: Mapping[str, Any]) -> dict[str, Any]:
  """The record of a committed step: its files' digests, `arrays` (array_record) and the
  JSON `items` with their digests."""
  return _sealed({
      "format": _FORMAT, "step": step, "files": file_digests(step_dir), "arrays": dict(arrays),
      "items": {name: {"sha256": json_digest(value), "value": value}
                for name, value in items.items()},
  })


def write_record(step_dir: str, record: Mapping[str, Any]) -> None:
  """Writes a step's record atomically (temporary file, fsync, rename)."""
  _write(step_dir, record)


def replace_item(step_dir: str, record: Mapping[str, Any], name: str, value: Any) -> None:
  """Rewrites a step's record with JSON item `name` replaced (its files are unchanged)."""
  items = {**record["items"], name: {"sha256": json_digest(value), "value": value}}
  _write(step_dir, {**record, "items": items})


def _sealed(record: Mapping[str, Any]) -> dict[str, Any]:
  """The record with the digest of all its other fields (so no field can change unseen)."""
  body = {key: value for key, value in record.items() if key != "sha256"}
  return {**body, "sha256": json_digest(body)}


def _write(step_dir: str, record: Mapping[str, Any]) -> None:
  record = _sealed(record)
  temporary = os.path.join(step_dir, RECORD_FILE + ".tmp")
  with open(temporary, "w") as f:
    json.dump(record, f)
    f.flush()
    os.fsync(f.fileno())
  os.rename(temporary, os.path.join(step_dir, RECORD_FILE))
  directory = os.open(step_dir, os.O_RDONLY)
  try:
    os.fsync(directory)
  finally:
    os.close(directory)


def read_record(step_dir: str) -> dict[str, Any]:
  """The record of a step, its JSON items checked; IntegrityError if absent or damaged."""
  path = os.path.join(step_dir, RECORD_FILE)
  try:
    with open(path, "rb") as f:
      record = json.loads(f.read().decode())
    if _sealed(record)["sha256"] != record["sha256"]:
      raise ValueError("it does not match its own digest")
    items = record["items"]
    if record.get("format") != _FORMAT or not all(
        isinstance(record[key], dict) for key in ("files", "arrays")):
      raise ValueError(f"format {record.get('format')!r}")
    for name, item in items.items():
      if json_digest(item["value"]) != item["sha256"]:
        raise ValueError(f"item '{name}' does not match its digest")
  except FileNotFoundError:
    raise IncompleteError(f"no {RECORD_FILE}: the save never completed") from None
  except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
    raise IntegrityError(f"{RECORD_FILE} is damaged ({type(e).__name__}: {e})") from None
  return record


def verify_files(step_dir: str, record: Mapping[str, Any]) -> None:
  """IntegrityError naming the first file of the record that is missing or differs."""
  for relative, expected in record["files"].items():
    path = os.path.join(step_dir, relative)
    try:
      actual = _file_digest(path)
    except FileNotFoundError:
      raise IntegrityError(f"{relative} is missing") from None
    except OSError as e:
      raise IntegrityError(f"{relative} cannot be read ({e.strerror})") from None
    if actual != expected:
      raise IntegrityError(f"{relative} differs from its digest")


def verify_values(record: Mapping[str, Any], state: Any,
                  items: Mapping[str, Any] | None = None) -> None:
  """IntegrityError naming the first restored array (or JSON item) that differs from the
  value saved."""
  arrays = record["arrays"]
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  names = {leaf_name(path) for path, _ in leaves}
  if names != set(arrays):
    raise IntegrityError(f"arrays {sorted(names ^ set(arrays))[:3]} are not in both the record "
                         "and the restored state")
  for path, leaf in leaves:
    expected = arrays[leaf_name(path)]["sha256"]
    if expected and getattr(leaf, "is_fully_addressable", True) and (
        _array_digest(leaf) != expected):
      raise IntegrityError(f"array '{leaf_name(path)}' differs from the value saved")
  for name, value in (items or {}).items():
    if json_digest(value) != record["items"][name]["sha256"]:
      raise IntegrityError(f"item '{name}' differs from the value saved")
