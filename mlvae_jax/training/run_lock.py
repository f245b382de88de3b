"""One writer per workdir: an `fcntl.flock` on WORKDIR/run.lock, held by process 0 for the run.

Two runs writing one workdir corrupt each other's checkpoints and records, so the second
fails at once with one line naming the holder (host, pid, start time). The kernel drops a
flock when its process dies, however it dies, so a lock left by a killed run never blocks.

The holder is recorded in the file only by `announce`, when the run starts writing: a run
refused before that (another config's checkpoints, bad data) leaves the workdir byte for
byte as it was. `release` empties the file again.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

import jax
import numpy as np
from jax.experimental import multihost_utils

from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.training.workdir import SetupError

LOCK_FILE = "run.lock"


def _describe(content: str) -> str:
  """'host H, pid P, started T' from the lock file, or why the holder is not known."""
  try:
    holder = json.loads(content)
    return f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
  except (ValueError, KeyError, TypeError):
    return "holder not recorded yet: it is starting"


class RunLock:
  """The lock of one workdir, held from `acquire` to `release` (or the process's death)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock (creating the workdir if needed) or raises SetupError naming the holder."""
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      with open(fd, closefd=True) as f:
        holder = _describe(f.read())
      raise SetupError(
          f"workdir {self.workdir} is in use by another run ({holder}); wait for it to end, "
          "stop it, or use another --workdir"
      ) from None
    self._fd = fd
    self._clear()  # a killed run's record: it no longer holds the lock

  def announce(self) -> None:
    """Records this process as the holder, for the message a second run shows (process 0)."""
    if self._fd is None:
      return
    holder = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    self._clear()
    os.pwrite(self._fd, json.dumps(holder).encode(), 0)
    os.fsync(self._fd)

  def release(self) -> None:
    """Empties the record and drops the lock; a no-op if it is not held."""
    if self._fd is None:
      return
    self._clear()
    os.close(self._fd)  # closing the only descriptor drops the flock
    self._fd = None

  def _clear(self) -> None:
    """Empties the record; an empty file is left as it is (truncating would touch its mtime,
    and a run refused before it writes leaves the workdir exactly as it was)."""
    if os.fstat(self._fd).st_size:
      os.ftruncate(self._fd, 0)


def holder(workdir: str) -> str | None:
  """'host H, pid P, started T' of the run holding the workdir's lock now, or None (no
  run, or one that died). Only looks: creates and changes nothing."""
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDONLY)
  except OSError:
    return None
  with open(fd, closefd=True) as f:
    try:
      fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return _describe(f.read())
    fcntl.flock(fd, fcntl.LOCK_UN)
  return None


def acquire_for_run(workdir: str) -> RunLock:
  """The workdir's lock, taken by process 0; every process fails alike if it is held or
  the workdir cannot be written (checked first: nothing is created then)."""
  workdir_lib.check_writable(workdir)
  lock = RunLock(workdir)
  error = ""
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except SetupError as e:
      error = str(e)
  if jax.process_count() > 1:
    refused = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
    if refused and not error:
      error = f"workdir {workdir} is in use by another run (see process 0's error)"
  if error:
    raise SetupError(error)
  return lock
