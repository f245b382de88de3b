"""`classify`: does the content code (strategy 1, one image) identify the group?

Probes are fitted on the codes of `fit_split` and scored on `split`; style should carry
little group information, so each style probe is reported beside its content probe. The
linear probe gives `content_accuracy` / `style_accuracy`; a code can hide the group
non-linearly, so the probes in `settings.probes` (k-NN, MLP) add `content_<probe>` and
`style_<probe>`.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.probes import PROBES, majority_rate, probe_accuracy
from mlvae_jax.models import Posterior


class FittedProbes(Evaluator):
  """Base of the probe evaluators: probes are fitted on the codes of `fit_split` and scored
  on those of `split` (both subsampled to `max_examples`, read and encoded once)."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    self.fit = ctx.split(settings.fit_split, settings.max_examples)
    self.test = ctx.split(settings.split, settings.max_examples)

  def fit_and_test_codes(self, params: Any) -> tuple[Posterior, Posterior]:
    s = self.settings
    return (self.ctx.codes(params, s.fit_split, s.max_examples),
            self.ctx.codes(params, s.split, s.max_examples))


@register("classify")
class LatentClassification(FittedProbes):
  """content_/style_ accuracy (linear), content_/style_<probe> for each non-linear probe,
  and chance (the majority rate of `split`)."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    unknown = sorted(set(settings.probes) - set(PROBES))
    if unknown:
      raise ValueError(f"config.evals.<classify>.probes names unknown probes {unknown}; "
                       f"choose from {PROBES}")

  def run(self, params: Any) -> dict[str, float]:
    fit, test = self.fit_and_test_codes(params)
    s = self.settings
    metrics = {"chance": majority_rate(self.test.labels)}
    for code in ("content", "style"):
      fit_code, test_code = getattr(fit, f"{code}_mu"), getattr(test, f"{code}_mu")
      for kind in ("linear", *s.probes):
        name = f"{code}_accuracy" if kind == "linear" else f"{code}_{kind}"
        metrics[name] = probe_accuracy(fit_code, self.fit.labels, test_code, self.test.labels,
                                       kind, seed=self.ctx.config.seed,
                                       knn_neighbours=s.knn_neighbours, mlp_hidden=s.mlp_hidden)
    return metrics
