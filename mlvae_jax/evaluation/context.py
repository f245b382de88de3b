"""What every evaluation protocol receives: the trained model and lazily loaded splits."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections
import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax.models import MLVAE


@dataclasses.dataclass
class EvalContext:
  """A trained model plus its data; splits are read once and shared by all protocols."""

  config: ml_collections.ConfigDict
  model: MLVAE
  params: Any
  output_dir: pathlib.Path
  max_examples: int = 5000
  _splits: dict[str, Any] = dataclasses.field(default_factory=dict)

  def split(self, name: str) -> Any:
    """`data.load_split` result, subsampled (deterministically) to at most `max_examples`."""
    if name not in self._splits:
      self._splits[name] = self._load(name)
    return self._splits[name]

  def _load(self, name: str) -> Any:
    split = data_lib.load_split(self.config.data, name)
    if len(split.x) <= self.max_examples:
      return split
    rng = np.random.default_rng(self.config.seed)
    keep = np.sort(rng.choice(len(split.x), self.max_examples, replace=False))
    return dataclasses.replace(
        split, x=split.x[keep], labels=split.labels[keep],
        factors=None if split.factors is None else split.factors[keep],
    )

  def has_split(self, name: str) -> bool:
    try:
      return len(self.split(name).x) > 0
    except data_lib.DataError:
      return False
