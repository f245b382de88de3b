"""Disentanglement of content and style against the ground-truth factors (grouped_shapes).

The factors named in `config.data.group_by` are shared within a group (content); the others
vary freely (style). A good ML-VAE puts content factors in the content code and style factors
in the style code: each factor is probed linearly from each code, and the score is the
probe's gain over the majority rate, normalised to [0, 1] (1 = perfectly predictable).
"""

from __future__ import annotations

import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy

MAX_BINS = 8


def _discretise(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Class labels for a factor: its own values if few, else quantile bins of `reference`."""
  if len(np.unique(reference)) <= MAX_BINS:
    return values.astype(np.int64) if np.all(np.mod(reference, 1) == 0) else np.searchsorted(np.unique(reference), values)
  edges = np.quantile(reference, np.linspace(0, 1, MAX_BINS + 1)[1:-1])
  return np.searchsorted(edges, values)


def _normalised_gain(accuracy: float, chance: float) -> float:
  return max(0.0, (accuracy - chance) / max(1e-9, 1.0 - chance))


def factor_disentanglement(ctx: EvalContext) -> dict[str, float]:
  train, test = ctx.split("train"), ctx.split("test")
  if train.factors is None:
    raise ValueError(
        f"evaluator 'disentanglement' needs ground-truth factors, which dataset "
        f"'{ctx.config.data.name}' lacks; use data.name='grouped_shapes' or drop it from "
        "config.eval.evaluators"
    )
  content_factors = {name.strip() for name in ctx.config.data.group_by.split(",")}
  train_post = inference.encode(ctx.model, ctx.params, train.x)
  test_post = inference.encode(ctx.model, ctx.params, test.x)
  codes = {"content": (train_post.content_mu, test_post.content_mu),
           "style": (train_post.style_mu, test_post.style_mu)}
  metrics: dict[str, float] = {}
  on_target, off_target = [], []
  for j, name in enumerate(train.factor_names):
    train_labels = _discretise(train.factors[:, j], train.factors[:, j])
    test_labels = _discretise(test.factors[:, j], train.factors[:, j])
    chance = majority_rate(test_labels)
    for code_name, (train_code, test_code) in codes.items():
      gain = _normalised_gain(probe_accuracy(train_code, train_labels, test_code, test_labels), chance)
      metrics[f"{name}/{code_name}"] = gain
      belongs = (name in content_factors) == (code_name == "content")
      (on_target if belongs else off_target).append(gain)
  metrics["on_target"] = float(np.mean(on_target))
  metrics["leakage"] = float(np.mean(off_target))
  metrics["score"] = metrics["on_target"] - metrics["leakage"]
  return metrics
