"""Hypothesis strategies shared by the tests of batch-level terms."""

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st


@st.composite
def ragged_rows(draw, min_rows: int, max_group_size: int, bound: float):
  """(codes [n, 3] float32, group_ids, mask): consecutive groups of random sizes, then padding
  rows (id G) whose codes are garbage (1e4) that must not matter."""
  n = draw(st.integers(min_rows, 24))
  sizes = draw(st.lists(st.integers(1, max_group_size), min_size=1, max_size=6))
  ids = np.repeat(np.arange(len(sizes)), sizes)[:n]
  group_ids = np.full(n, len(sizes), np.int32)
  group_ids[:len(ids)] = ids
  mask = np.arange(n) < len(ids)
  codes = draw(hnp.arrays(np.float32, (n, 3), elements=st.floats(-bound, bound, width=32)))
  codes[~mask] = 1e4
  return codes, group_ids, mask
