"""`classify`: does the content code (strategy 1, one image) identify the group?

Linear probes are fitted on the codes of `fit_split` and scored on `split`; style should
carry little group information, so the style probe is reported beside the content probe.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy
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
  """content_accuracy, style_accuracy and chance (the majority rate of `split`)."""

  def run(self, params: Any) -> dict[str, float]:
    fit, test = self.fit_and_test_codes(params)
    return {
        "content_accuracy": probe_accuracy(fit.content_mu, self.fit.labels, test.content_mu,
                                           self.test.labels),
        "style_accuracy": probe_accuracy(fit.style_mu, self.fit.labels, test.style_mu,
                                         self.test.labels),
        "chance": majority_rate(self.test.labels),
    }
