"""Stopping on SIGTERM, SIGINT or SIGHUP at a step every process agrees on, so that step is
saved.

Schedulers and preemptible accelerators send SIGTERM (then SIGKILL after a grace period);
users press Ctrl-C; a closed terminal or ssh session sends SIGHUP. Either way the run finishes its current step, saves and commits a
checkpoint of it, flushes its metrics and exits with `RESUMABLE_EXIT_CODE`; the same
command then continues bit for bit.

- One process: the handlers only set a flag, which the loop reads after every step (a
  Python attribute: no device or host sync).
- Several processes: JAX's preemption service (started by `jax.distributed.initialize`)
  catches SIGTERM on any host and agrees, through the coordination service, on the first
  step every process can still reach; `multihost_utils.reached_preemption_sync_point` is a
  local read, so asking it every step costs nothing. SIGINT and SIGHUP are forwarded to
  that service as a SIGTERM of this process. SIGTERM is then left to JAX: a Python handler
  would replace it.

SIGQUIT (Ctrl-\\) is left as it is: the way to end a run at once, without saving (like
SIGKILL, it loses only the steps since the last checkpoint).

Signals after the first never interrupt anything: the stop, and the save it makes, are
already under way (SIGKILL still ends the process at once; checkpoints commit atomically,
so that loses only the steps since the last one).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

import jax
from jax.experimental import multihost_utils

RESUMABLE_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL: temporary failure, run the command again
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_FORWARDED = (signal.SIGINT, signal.SIGHUP)  # several processes: to JAX as SIGTERM


class Preempted(Exception):
  """The run stopped on a signal after committing a checkpoint of `step`."""

  def __init__(self, step: int, signal_name: str, checkpoint_dir: str):
    super().__init__(
        f"stopped by {signal_name} at step {step}; checkpoint {step} is saved in "
        f"{checkpoint_dir}; run the same command again to resume (exit status "
        f"{RESUMABLE_EXIT_CODE})"
    )
    self.step = step


class StopSignals:
  """While entered, SIGTERM, SIGINT and SIGHUP ask the run to stop at an agreed step (`reached`)."""

  def __init__(self):
    self.signal_name: str | None = None
    self._multiprocess = jax.process_count() > 1
    self._previous: dict[int, object] = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.signal_name is not None:
      return  # a stop is under way: let it finish its save
    self.signal_name = signal.Signals(signum).name
    if self._multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)  # JAX's preemption service tells every process

  def __enter__(self) -> StopSignals:
    for signum in _FORWARDED if self._multiprocess else _SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: object) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def reached(self, step: int) -> bool:
    """Whether the run should save `step` and stop (the same answer on every process)."""
    if self._multiprocess:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None
