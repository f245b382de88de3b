"""Observations drawn with one ground-truth factor held fixed, and their codes, for the
FactorVAE and BetaVAE scores.

A sampler says which levels a factor takes (`values`, drawn from the factor's marginal) and
draws one observation per requested level with that factor fixed and the others free
(`observations`). grouped_shapes renders them from its factors; any other dataset with
factors draws them from its stored examples, whose other factors then follow the data's
conditional distribution (the same as the marginal when factors are independent).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from mlvae_jax.data import shapes
from mlvae_jax.evaluation.disentanglement_metrics import FixedFactorCodes, PairedCodes

Represent = Callable[[np.ndarray], np.ndarray]  # observations [n, ...] -> codes [n, d]
_ROWS_PER_CALL = 1024  # observations encoded per call of `represent`


class FactorSampler(Protocol):
  num_factors: int

  def values(self, factor: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` levels of `factor`, drawn from its marginal."""

  def observations(self, factor: int, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One observation per entry of `values`, with `factor` at that level, others free."""


@dataclasses.dataclass(frozen=True)
class RenderedShapes:
  """grouped_shapes observations rendered on demand: factors independent and uniform."""

  resolution: int
  num_factors: int = len(shapes.FACTOR_SIZES)

  def values(self, factor: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, shapes.FACTOR_SIZES[factor], count)

  def observations(self, factor: int, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factors = shapes.sample_factors(rng, len(values))
    factors[:, factor] = values
    return shapes.render(factors, self.resolution).astype(np.float32) / np.float32(255)


class StoredExamples:
  """Observations drawn from a dataset's examples with their factor levels."""

  def __init__(self, x: np.ndarray, factors: np.ndarray):
    if factors is None or len(factors) != len(x) or len(x) == 0:
      raise ValueError("StoredExamples needs observations and integer factors [n, k] of one n > 0")
    self.x, self.factors = x, np.asarray(factors)
    self.num_factors = self.factors.shape[1]
    self._order = np.argsort(self.factors, axis=0, kind="stable")  # rows by level, per factor

  def values(self, factor: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return self.factors[rng.integers(0, len(self.x), count), factor]

  def observations(self, factor: int, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    order = self._order[:, factor]
    levels = self.factors[order, factor]
    low = np.searchsorted(levels, values, side="left")
    high = np.searchsorted(levels, values, side="right")
    if np.any(high == low):
      raise ValueError(f"no stored example has factor {factor} at level(s) {np.unique(values[high == low])}")
    pick = low + np.floor(rng.random(len(values)) * (high - low)).astype(np.int64)
    return self.x[order[pick]]


def _encode_batches(batches: list[np.ndarray], represent: Represent) -> np.ndarray:
  """Codes [m, b, d] of m equal-sized observation batches, several batches per call."""
  per_call = max(1, _ROWS_PER_CALL // len(batches[0]))
  codes = [
      represent(np.concatenate(batches[start:start + per_call]))
      for start in range(0, len(batches), per_call)
  ]
  return np.concatenate(codes).reshape(len(batches), len(batches[0]), -1)


def reference_codes(sampler: FactorSampler, represent: Represent, count: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Codes [count, d] of observations with every factor free (fixing a level drawn from the
  marginal of each row leaves the joint distribution as it is)."""
  observations = sampler.observations(0, sampler.values(0, count, rng), rng)
  return np.concatenate([represent(observations[s:s + _ROWS_PER_CALL])
                         for s in range(0, count, _ROWS_PER_CALL)])


def fixed_factor_codes(sampler: FactorSampler, represent: Represent, num_batches: int,
                       batch_size: int, rng: np.random.Generator) -> FixedFactorCodes:
  """Batches for the FactorVAE score: each fixes one random factor at one level throughout."""
  factor = rng.integers(0, sampler.num_factors, num_batches)
  batches = [
      sampler.observations(j, np.repeat(sampler.values(j, 1, rng), batch_size), rng)
      for j in factor
  ]
  return FixedFactorCodes(factor, _encode_batches(batches, represent))


def paired_codes(sampler: FactorSampler, represent: Represent, num_batches: int,
                 batch_size: int, rng: np.random.Generator) -> PairedCodes:
  """Batches for the BetaVAE score: each picks one factor; pair i shares a level of it."""
  factor = rng.integers(0, sampler.num_factors, num_batches)
  levels = [sampler.values(j, batch_size, rng) for j in factor]
  first = [sampler.observations(j, v, rng) for j, v in zip(factor, levels)]
  second = [sampler.observations(j, v, rng) for j, v in zip(factor, levels)]
  return PairedCodes(factor, _encode_batches(first, represent), _encode_batches(second, represent))
