"""The host path's prefetcher: order, running ahead while the consumer waits, the end of the
source, its exceptions, and stopping a producer that is blocked or still running."""

import threading

import pytest

from mlvae_jax.training.feed.prefetch import Prefetcher

WAIT_S = 30  # generous: only a hang reaches it


class Source:
  """Counts the items it has produced; optionally fails at item `fail_at`."""

  def __init__(self, count=None, fail_at=None):
    self.count, self.fail_at = count, fail_at
    self.produced = 0
    self.advanced = threading.Condition()

  def __iter__(self):
    while self.count is None or self.produced < self.count:
      if self.produced == self.fail_at:
        raise KeyError(f"bad record {self.produced}")
      with self.advanced:
        self.produced += 1
        self.advanced.notify_all()
      yield self.produced - 1

  def wait_for(self, produced):
    with self.advanced:
      return self.advanced.wait_for(lambda: self.produced >= produced, timeout=WAIT_S)


def test_items_come_in_order_and_the_end_ends_the_iteration():
  with Prefetcher(iter(Source(count=50)), depth=2) as items:
    assert list(items) == list(range(50))
    with pytest.raises(StopIteration):
      next(items)


def test_runs_ahead_of_the_consumer_by_depth_items():
  source = Source()
  with Prefetcher(iter(source), depth=2) as items:
    assert next(items) == 0
    # two finished items queued and one more made, held until there is room
    assert source.wait_for(4)
    assert next(items) == 1
    assert source.wait_for(5)
  assert source.produced == 5  # closing stopped the producer blocked on a full queue


def test_an_error_of_the_source_reaches_the_consumer_after_the_items_before_it():
  with Prefetcher(iter(Source(fail_at=3))) as items:
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="bad record 3"):
      next(items)
    with pytest.raises(StopIteration):
      next(items)


def test_closing_an_unread_prefetcher_ends_its_thread():
  items = Prefetcher(iter(Source()), depth=1)
  items.close()
  assert not items._thread.is_alive()
  with pytest.raises(StopIteration):
    next(items)


def test_depth_below_one_is_refused():
  with pytest.raises(ValueError, match="depth 0 must be >= 1"):
    Prefetcher(iter(()), depth=0)
