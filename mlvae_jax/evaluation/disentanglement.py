"""`disentanglement`: content and style against the ground-truth factors (grouped_shapes).

The factors named in `config.data.group_by` are shared within a group (content); the others
vary freely (style). A good ML-VAE puts content factors in the content code and style factors
in the style code: each factor is probed from each code with `settings.probe` (linear by
default; 'knn' or 'mlp' see non-linear leakage) fitted on `fit_split` and scored on `split`,
and the score is the probe's gain over the majority rate, normalised to
[0, 1] (1 = perfectly predictable).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from mlvae_jax.data.grouping import parse_group_by
from mlvae_jax.evaluation.base import register
from mlvae_jax.evaluation.classify import FittedProbes
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy


def discretise(values: np.ndarray, reference: np.ndarray, bins: int) -> np.ndarray:
  """Class labels for a factor: its own values if at most `bins`, else quantile bins of
  `reference`."""
  if len(np.unique(reference)) <= bins:
    if np.all(np.mod(reference, 1) == 0):
      return values.astype(np.int64)
    return np.searchsorted(np.unique(reference), values)
  edges = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
  return np.searchsorted(edges, values)


def normalised_gain(accuracy: float, chance: float) -> float:
  """(accuracy - chance) / (1 - chance), floored at 0: 1 = perfectly predictable."""
  return max(0.0, (accuracy - chance) / max(1e-9, 1.0 - chance))


def factor_gains(
    codes: Mapping[str, tuple[np.ndarray, np.ndarray]], fit_factors: np.ndarray,
    test_factors: np.ndarray, factor_names: Sequence[str], content_factors: set[str], bins: int,
    probe: str = "linear",
) -> dict[str, float]:
  """<factor>/<code> gains of probes fitted on (fit code, fit factors) and scored on the
  test ones; on_target (content factors from 'content', the others from 'style'), leakage
  (the other pairings) and score = on_target - leakage. `codes`: {'content' | 'style':
  (fit codes [n, d], test codes [m, d])}."""
  metrics: dict[str, float] = {}
  on_target, off_target = [], []
  for j, name in enumerate(factor_names):
    reference = fit_factors[:, j]
    fit_labels = discretise(reference, reference, bins)
    test_labels = discretise(test_factors[:, j], reference, bins)
    chance = majority_rate(test_labels)
    for code_name, (fit_code, test_code) in codes.items():
      accuracy = probe_accuracy(fit_code, fit_labels, test_code, test_labels, probe)
      gain = normalised_gain(accuracy, chance)
      metrics[f"{name}/{code_name}"] = gain
      belongs = (name in content_factors) == (code_name == "content")
      (on_target if belongs else off_target).append(gain)
  metrics["on_target"] = float(np.mean(on_target))
  metrics["leakage"] = float(np.mean(off_target))
  metrics["score"] = metrics["on_target"] - metrics["leakage"]
  return metrics


@register("disentanglement")
class FactorDisentanglement(FittedProbes):
  """`factor_gains` of the content and style means of `split`, probes fitted on `fit_split`."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    if self.fit.factors is None:
      raise ValueError(
          f"evaluator type {settings.type!r} needs ground-truth factors, which dataset "
          f"'{ctx.config.data.name}' lacks; use data.name='grouped_shapes' (or "
          "'grouped_scenes') or remove it from config.evals"
      )
    self.content_factors = set(parse_group_by(ctx.config.data.group_by))

  def run(self, params: Any) -> dict[str, float]:
    fit, test = self.fit_and_test_codes(params)
    codes = {"content": (fit.content_mu, test.content_mu), "style": (fit.style_mu, test.style_mu)}
    return factor_gains(codes, self.fit.factors, self.test.factors, self.fit.factor_names,
                        self.content_factors, self.settings.bins, self.settings.probe)
