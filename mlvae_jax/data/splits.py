"""Which examples belong to train / validation / test / unseen.

Validation and test are the TFDS splits of those names; one the dataset lacks is carved
from TFDS 'train' (`validation_fraction` of it) by a permutation with a fixed seed, so it is
a property of the dataset and does not move with the run's seed. 'unseen' holds every
example, from any TFDS split, whose group value is listed in `data.unseen_groups`; those
values are removed from the other three splits, so a model never sees them before the
unseen-group evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlvae_jax.data.errors import DataError
from mlvae_jax.data.grouping import GroupCoding
from mlvae_jax.data.sources import Examples

SPLITS = ("train", "validation", "test", "unseen")
_SPLIT_SEED = 2018


def _carve(pool: np.ndarray, fraction: float, parts: int) -> list[np.ndarray]:
  """`parts` disjoint random slices of `fraction` of `pool` each, then the rest."""
  shuffled = np.random.default_rng(_SPLIT_SEED).permutation(pool)
  size = int(round(fraction * len(pool)))
  return [shuffled[i * size:(i + 1) * size] for i in range(parts)] + [shuffled[parts * size:]]


def split_rows(examples: Examples, coding: GroupCoding, data_config: Any, split: str) -> np.ndarray:
  """Sorted example indices of `split`; DataError if the split is unknown or empty."""
  if split not in SPLITS:
    raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
  fraction = float(data_config.validation_fraction)
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"data.validation_fraction={fraction} must be in [0, 1)")
  if split == "validation" and fraction == 0.0 and "validation" not in examples.origin_names:
    raise DataError("split 'validation' is empty: data.validation_fraction is 0; raise it")
  unseen = np.isin(coding.codes, coding.lookup(data_config.unseen_groups))
  if split == "unseen":
    if not data_config.unseen_groups.strip():
      raise DataError(
          "split 'unseen' needs held-out group values: set data.unseen_groups, e.g. '7,8,9'"
      )
    rows = np.nonzero(unseen)[0]
  else:
    rows = _seen_rows(examples, fraction, split)
    rows = np.sort(rows[~unseen[rows]])
  if rows.size == 0:
    raise DataError(
        f"split {split!r} of {data_config.name!r} has no examples; check "
        "data.unseen_groups and data.validation_fraction"
    )
  return rows


def _seen_rows(examples: Examples, fraction: float, split: str) -> np.ndarray:
  by_origin = {name: np.nonzero(examples.origin == i)[0]
               for i, name in enumerate(examples.origin_names)}
  if "train" not in by_origin:
    raise DataError(
        f"the dataset has no TFDS 'train' split (splits: {list(by_origin)}); use a dataset "
        "with a 'train' split"
    )
  missing = [name for name in ("validation", "test") if name not in by_origin]
  *carved, train = _carve(by_origin["train"], fraction, len(missing))
  return dict(by_origin, train=train, **dict(zip(missing, carved)))[split]
