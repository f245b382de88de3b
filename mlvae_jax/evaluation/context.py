"""The data access every evaluator receives: the run's setup, its splits (read once) and the
codes of those splits under the current parameters (encoded once per parameters, however
many evaluators read them)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import ml_collections
import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax import inference
from mlvae_jax.models import MLVAE, Posterior
from mlvae_jax.training.setup import Setup


@dataclasses.dataclass
class EvalContext:
  """What the evaluators of one run share: config, setup (mesh, model, loss), output
  directory, and caches of splits and codes."""

  config: ml_collections.ConfigDict
  setup: Setup
  output_dir: pathlib.Path
  _splits: dict[tuple[str, int], data_lib.Split] = dataclasses.field(default_factory=dict)
  _codes: dict[tuple[str, int], Posterior] = dataclasses.field(default_factory=dict)
  _codes_params: Any = None  # the parameters `_codes` were computed with

  @property
  def model(self) -> MLVAE:
    return self.setup.model

  def split(self, name: str, max_examples: int) -> data_lib.Split:
    """`data.load_split` result, subsampled (deterministically) to at most `max_examples`."""
    key = (name, max_examples)
    if key not in self._splits:
      self._splits[key] = self._load(name, max_examples)
    return self._splits[key]

  def _load(self, name: str, max_examples: int) -> data_lib.Split:
    split = data_lib.load_split(self.config.data, name)
    if len(split.x) <= max_examples:
      return split
    rng = np.random.default_rng(self.config.seed)
    keep = np.sort(rng.choice(len(split.x), max_examples, replace=False))
    return dataclasses.replace(
        split, x=split.x[keep], labels=split.labels[keep],
        factors=None if split.factors is None else split.factors[keep],
    )

  def codes(self, params: Any, name: str, max_examples: int) -> Posterior:
    """Per-observation posteriors of `split(name, max_examples)` under `params` (host
    parameters); computed once for the same parameters object."""
    if params is not self._codes_params:
      self._codes, self._codes_params = {}, params
    key = (name, max_examples)
    if key not in self._codes:
      self._codes[key] = inference.encode(self.model, params, self.split(name, max_examples).x)
    return self._codes[key]
