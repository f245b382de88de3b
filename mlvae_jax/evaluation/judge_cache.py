"""Swap judges fitted once per dataset and settings, kept beside the prepared data.

A judge is a function of what it is fitted on and how, and of nothing else, so it is stored
as DATA_DIR/mlvae_judges/<key>.judge under a digest of exactly that (`judge_key`): the fit
images and labels themselves (the dataset's name, version and config, the fit split, its
subsample and the seed that drew it all show in them, so none can go stale), the classifier
module's repr (judge type, architecture settings, number of classes) and the fit settings
(epochs, batch size, learning rate, seed), under FORMAT. Hashing 20000 64x64 images takes
about a second; fitting their judges takes minutes on a CPU.

A file is the SHA-256 of its payload, then the payload (flax msgpack of the key and the
parameters). One that fails that check, holds another key or whose parameters do not fit the
module is never used: it is refitted and replaced, with a one-line notice. Files are written
under a temporary name and renamed, so no reader sees half of one, and a judge is looked up
and fitted under a lock of its key, so runs that start together fit it once. A data dir
that cannot be written is left alone: its judges are fitted in memory (one-line notice).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import IO, Any, Iterator, Mapping

from flax import serialization
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mlvae_jax.data import sources
from mlvae_jax.evaluation.pixel_classifier import FitSettings, PixelClassifier, fit_pixel_classifier

FORMAT = 1
CACHE_DIR = "mlvae_judges"
SUFFIX = ".judge"
SHORT_KEY_HEX = 6  # 24 bits: exact as a float32 TensorBoard scalar
DIGEST_BYTES = hashlib.sha256().digest_size


def cache_directory(data_config: Any) -> pathlib.Path:
  """Where the judges of datasets prepared in data.data_dir are kept."""
  return sources.data_dir(data_config) / CACHE_DIR


def judge_key(images: np.ndarray, labels: np.ndarray, module: nn.Module,
              settings: FitSettings) -> str:
  """The hex digest of everything a fitted judge depends on."""
  images = np.ascontiguousarray(images, np.float32)
  labels = np.ascontiguousarray(labels, np.int64)
  header = {"format": FORMAT, "module": repr(module), "fit": dataclasses.asdict(settings),
            "images": list(images.shape), "labels": list(labels.shape)}
  digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
  digest.update(images.data)
  digest.update(labels.data)
  return digest.hexdigest()


def short_key(keys: Mapping[str, str]) -> int:
  """One number naming a set of judges {target: key}: evaluations with the same number were
  judged by the same classifiers."""
  lines = "".join(f"{name}={key}\n" for name, key in sorted(keys.items()))
  return int(hashlib.sha256(lines.encode()).hexdigest()[:SHORT_KEY_HEX], 16)


def _decode(data: bytes, key: str, expected: Any) -> Any:
  """The parameters a cache file's bytes hold; ValueError saying what is wrong with them."""
  digest, payload = data[:DIGEST_BYTES], data[DIGEST_BYTES:]
  if hashlib.sha256(payload).digest() != digest:
    raise ValueError("its checksum does not match its contents")
  record = serialization.msgpack_restore(payload)
  if not isinstance(record, dict) or record.get("key") != key:
    raise ValueError("it holds another key")
  params = record.get("params")
  leaves, want = jax.tree.leaves(params), jax.tree.leaves(expected)
  if jax.tree.structure(params) != jax.tree.structure(expected) or any(
      np.shape(a) != b.shape or np.asarray(a).dtype != b.dtype for a, b in zip(leaves, want)):
    raise ValueError("its parameters do not fit the judge")
  return params


def _writable(directory: pathlib.Path) -> bool:
  """Whether `directory` (or, before it exists, its nearest existing parent) can be written;
  a read-only mount says no even to root."""
  while not directory.exists() and directory != directory.parent:
    directory = directory.parent
  return os.access(directory, os.W_OK)


class JudgeCache:
  """The judges cached in `directory`; counts what it loaded and fitted."""

  def __init__(self, directory: pathlib.Path):
    self.directory = directory
    # Why judges cannot be cached here (None: they can); said once, at the first fit.
    self.unwritable: str | None = None if _writable(directory) else "not writable"
    self._told = False
    self.loaded = self.fitted = 0
    self.fit_seconds = 0.0

  def judge(self, images: np.ndarray, labels: np.ndarray, module: nn.Module,
            settings: FitSettings) -> tuple[PixelClassifier, str]:
    """The judge `module` fitted on (images, labels) with `settings`, and its key: from the
    cache if it holds it whole, else fitted now (and cached where the directory allows)."""
    key = judge_key(images, labels, module, settings)
    path = self.directory / f"{key}{SUFFIX}"
    with self._locked(key):
      params = self._read(path, key, module, images.shape[1:])
      if params is not None:
        self.loaded += 1
        return PixelClassifier(module, params), key
      start = time.perf_counter()
      judge = fit_pixel_classifier(images, labels, module=module, **dataclasses.asdict(settings))
      self.fit_seconds += time.perf_counter() - start
      self.fitted += 1
      self._write(path, key, judge.params)
    return judge, key

  def summary(self, what: str) -> str:
    """One line: how many judges of `what` were loaded and fitted, and where they are kept."""
    kept = f"not cached ({self.unwritable})" if self.unwritable else "cached"
    return (f"{what}: {self.loaded} judge(s) loaded and {self.fitted} fitted "
            f"({self.fit_seconds:.1f} s), {kept} in {self.directory}")

  @contextlib.contextmanager
  def _locked(self, key: str) -> Iterator[None]:
    """Holds the lock of `key` (where the directory can be written)."""
    lock = self._open_lock(key)
    try:
      if lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
      yield
    finally:
      if lock:
        lock.close()

  def _open_lock(self, key: str) -> IO[str] | None:
    if self.unwritable:
      return None
    try:
      self.directory.mkdir(parents=True, exist_ok=True)
      return open(self.directory / f"{key}.lock", "w")
    except OSError as e:
      self.unwritable = e.strerror or str(e)
      return None

  def _read(self, path: pathlib.Path, key: str, module: nn.Module,
            observation_shape: tuple[int, ...]) -> Any | None:
    """The cached parameters of `key`, or None if there are none or they are damaged."""
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      return None
    expected = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros((1, *observation_shape)))["params"])
    try:
      return _decode(data, key, expected)
    except ValueError as e:
      then = "refitting it in memory" if self.unwritable else "refitting and replacing it"
      print(f"swap judge cache: {path} is damaged ({e}); {then}", file=sys.stderr)
      return None

  def _write(self, path: pathlib.Path, key: str, params: Any) -> None:
    """Writes `path` atomically (a temporary file in its directory, synced, then renamed);
    where it cannot, says so once."""
    if not self.unwritable:
      payload = serialization.msgpack_serialize({"key": key, "params": jax.device_get(params)})
      try:
        _write_atomically(path, hashlib.sha256(payload).digest() + payload)
        return
      except OSError as e:
        self.unwritable = e.strerror or str(e)
    if not self._told:
      self._told = True
      print(f"swap judge cache: cannot write {self.directory} ({self.unwritable}); judges are "
            "fitted in memory and not cached", file=sys.stderr)


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    pathlib.Path(temporary).unlink(missing_ok=True)
    raise
