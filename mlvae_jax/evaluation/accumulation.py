"""`accumulation`: how group identification improves as strategy 2 pools more members.

For every group value of `split` (e.g. 'unseen' when the config holds groups out of
training), k support observations are pooled into one content posterior (product of
Normals, `inference.content_strategy2`); every other observation is assigned to the pooled
posterior under which its own content mean is most likely. Accuracy should rise, and the
pooled variance fall, with k; both are drawn in eval/accumulation_<split>.png.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation import figures
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.png import write_png


def assign(query_mu: np.ndarray, query_logvar: np.ndarray, group_mu: np.ndarray,
           group_logvar: np.ndarray) -> np.ndarray:
  """Most likely group for each query: log N(mu_q; mu_G, var_G + var_q), summed over dims."""
  var = np.exp(group_logvar)[None] + np.exp(query_logvar)[:, None]
  log_density = -0.5 * np.sum((query_mu[:, None] - group_mu[None]) ** 2 / var + np.log(var), axis=-1)
  return np.argmax(log_density, axis=1)


def draw_support(labels: np.ndarray, values: np.ndarray, k: int,
                 rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
  """k random members of each group value (indices, one array per value) and every other
  observation as the queries; shared with tools/unseen_geometry.py so both draw alike."""
  support = [rng.choice(np.nonzero(labels == v)[0], k, replace=False) for v in values]
  queries = np.setdiff1d(np.arange(len(labels)), np.concatenate(support))
  return support, queries


@register("accumulation")
class AccumulationCurve(Evaluator):
  """accuracy_k<k> and content_logvar_k<k> for each k of `support_sizes` that every group
  value can supply with a query left over; num_groups and chance."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    self.data = ctx.split(settings.split, settings.max_examples)

  def run(self, params: Any) -> dict[str, float]:
    s, labels = self.settings, self.data.labels
    code = self.ctx.codes(params, s.split, s.max_examples)
    values, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(self.ctx.config.seed)
    metrics: dict[str, float] = {"num_groups": float(len(values))}
    for k in s.support_sizes:
      if counts.min() <= k:
        break
      correct, total, pooled_logvar = 0, 0, []
      for _ in range(s.repeats):
        support, queries = draw_support(labels, values, k, rng)
        pooled = inference.content_strategy2(
            self.ctx.model, params, self.data.x[np.concatenate(support)],
            np.repeat(np.arange(len(values)), k), len(values))
        predicted = values[assign(code.content_mu[queries], code.content_logvar[queries],
                                  pooled.mu, pooled.logvar)]
        correct += int(np.sum(predicted == labels[queries]))
        total += len(queries)
        pooled_logvar.append(float(np.mean(pooled.logvar)))
      metrics[f"accuracy_k{k}"] = correct / total
      metrics[f"content_logvar_k{k}"] = float(np.mean(pooled_logvar))
    metrics["chance"] = 1.0 / len(values)
    if any(key.startswith("accuracy_k") for key in metrics):
      write_png(self.ctx.output_dir / f"accumulation_{s.split}.png",
                figures.accumulation_plot(metrics, s.split))
    return metrics
