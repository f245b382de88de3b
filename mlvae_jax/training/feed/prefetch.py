"""Preparing the next call's inputs while the devices run the current one (double buffering).

For data kept on the host, each call's batches are assembled and copied to the devices by a
background thread running the source iterator `depth` items ahead, so the transfer of batch
t + 1 overlaps step t. Items come out in the source's order; the source's end ends the
iteration, and an exception of the source is raised to the consumer at the item where it
happened (after the items before it).
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")
_ITEM, _END, _ERROR = "item", "end", "error"
_POLL_S = 0.1  # how often a producer blocked on a full queue checks for `close`


class Prefetcher(Iterator[T]):
  """Iterates `source` in a background thread, up to `depth` finished items ahead.

  Use it as a context manager (or call `close`) so the thread ends with the consumer.
  """

  def __init__(self, source: Iterator[T], depth: int = 1):
    if depth < 1:
      raise ValueError(f"prefetch depth {depth} must be >= 1")
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._closed = threading.Event()
    self._finished = False
    self._thread = threading.Thread(target=self._produce, args=(source,), daemon=True,
                                    name="mlvae_jax-prefetch")
    self._thread.start()

  def _produce(self, source: Iterator[T]) -> None:
    try:
      for item in source:
        if not self._put(_ITEM, item):
          return
    except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
      self._put(_ERROR, error)
      return
    self._put(_END, None)

  def _put(self, kind: str, value: object) -> bool:
    """Queues an entry unless the consumer closes first; False when it did."""
    while not self._closed.is_set():
      try:
        self._queue.put((kind, value), timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def __next__(self) -> T:
    if self._finished:
      raise StopIteration
    kind, value = self._queue.get()
    if kind == _ITEM:
      return value
    self._finished = True
    if kind == _ERROR:
      raise value
    raise StopIteration

  def __iter__(self) -> Prefetcher[T]:
    return self

  def close(self) -> None:
    """Stops the producer (it finishes the item under way) and waits for its thread."""
    self._closed.set()
    self._finished = True
    self._thread.join()

  def __enter__(self) -> Prefetcher[T]:
    return self

  def __exit__(self, *exc_info: object) -> None:
    self.close()
