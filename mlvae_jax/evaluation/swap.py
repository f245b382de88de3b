"""`swap`: swap consistency, judged by a classifier of real pixels (the measure and its judge, one module).

The judge is fitted on `fit_split` images (the group label; for factor datasets also each
ground-truth factor, quantised into at most `bins` classes) and reports its own accuracy on
`split`. It depends on nothing else, so it is fitted once per dataset and settings and kept
beside the prepared data (judge_cache.py); `judge_key` names the judges a score came from.
`judge='mlp'` is a pixel MLP; `judge='encoder'` trains the run's own encoder architecture as
the classifier, for images whose factors an MLP cannot see. For a factor dataset every factor
also gets the fraction of swaps whose factor follows the content source and the fraction that
follows the style source: content factors should follow content, style factors style
(`factor_consistency` averages the right one over factors).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.configs import check_choice
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation import judge_cache
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.pixel_classifier import (
    FitSettings, PixelClassifier, PixelMLP, encoder_classifier)

JUDGES = ("mlp", "encoder")
EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # x -> (content_mu, style_mu)
DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (content, style) -> images
PredictFn = Callable[[np.ndarray], np.ndarray]  # images -> labels


def different_label_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Indices (a, b) of `num_pairs` random pairs whose labels differ."""
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    raise ValueError("swap consistency needs observations of at least two different labels")
  a = rng.integers(0, len(labels), num_pairs)
  b = rng.integers(0, len(labels), num_pairs)
  same = labels[a] == labels[b]
  while np.any(same):  # redraw b where it shares a's label
    b[same] = rng.integers(0, len(labels), int(same.sum()))
    same = labels[a] == labels[b]
  return a, b


def swap_fractions(predicted: np.ndarray, content_labels: np.ndarray, style_labels: np.ndarray) -> dict[str, float]:
  """Fractions of swaps read as the content source's label, the style source's, or neither."""
  content = predicted == content_labels
  style = predicted == style_labels
  return {"content": float(np.mean(content)), "style": float(np.mean(style)),
          "neither": float(np.mean(~content & ~style))}


def swap_consistency(
    encode: EncodeFn, decode: DecodeFn, predict: PredictFn, x: np.ndarray, labels: np.ndarray,
    num_pairs: int, seed: int,
) -> dict[str, float]:
  """Decodes content of a with style of b over random pairs with labels[a] != labels[b]."""
  a, b = different_label_pairs(labels, num_pairs, np.random.default_rng(seed))
  content, _ = encode(x[a])
  _, style = encode(x[b])
  return swap_fractions(predict(decode(content, style)), labels[a], labels[b])


def quantise(values: np.ndarray, levels: int, bins: int) -> np.ndarray:
  """Factor indices in [0, levels) as at most `bins` classes of consecutive levels."""
  return np.asarray(values, np.int64) * min(bins, levels) // levels


@register("swap")
class SwapConsistency(Evaluator):
  """content / style / neither fractions for the group label, the judge's accuracy, and
  per-factor content- and style-source fractions on factor datasets; `judge_key`."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    check_choice("evals.<swap>.judge", settings.judge, JUDGES)
    fit = ctx.split(settings.fit_split, settings.fit_examples)
    self.test = ctx.split(settings.split, settings.max_examples)
    self.targets = {"group": (fit.labels, self.test.labels)}
    if fit.factors is not None:
      levels = np.maximum(fit.factors.max(0), self.test.factors.max(0)) + 1
      for j, name in enumerate(fit.factor_names):
        self.targets[name] = (quantise(fit.factors[:, j], levels[j], settings.bins),
                              quantise(self.test.factors[:, j], levels[j], settings.bins))
    self.content_factors = set(ctx.config.data.group_by.replace(" ", "").split(","))
    cache = judge_cache.JudgeCache(judge_cache.cache_directory(ctx.config.data))
    fit_settings = FitSettings(epochs=settings.classifier_epochs, seed=ctx.config.seed)
    self.judges: dict[str, PixelClassifier] = {}
    keys: dict[str, str] = {}
    for name, (fit_labels, _) in self.targets.items():
      module = self._judge_module(fit.x.shape[1:], fit_labels)
      self.judges[name], keys[name] = cache.judge(fit.x, fit_labels, module, fit_settings)
    self.judge_key = judge_cache.short_key(keys)
    print(cache.summary(f"swap judges {self.judge_key:0{judge_cache.SHORT_KEY_HEX}x} "
                        f"(judge_key {self.judge_key})"), file=sys.stderr)
    # The judges never change, so their own accuracy is measured once.
    self.judge_accuracy = {name: self.judges[name].accuracy(self.test.x, labels)
                           for name, (_, labels) in self.targets.items()}

  def _judge_module(self, observation_shape: tuple[int, ...], fit_labels: np.ndarray):
    """A pixel MLP or the run's encoder, with one output per class."""
    num_classes = int(fit_labels.max()) + 1
    if self.settings.judge == "mlp":
      return PixelMLP(hidden=self.settings.classifier_hidden, num_classes=num_classes)
    return encoder_classifier(self.ctx.config.model, observation_shape, num_classes)

  def run(self, params: Any) -> dict[str, float]:
    s = self.settings
    codes = self.ctx.codes(params, s.split, s.max_examples)
    rng = np.random.default_rng(self.ctx.config.seed)
    metrics: dict[str, float] = {"judge_key": float(self.judge_key)}
    right_source = []
    for name, (_, labels) in self.targets.items():
      if len(np.unique(labels)) < 2:
        continue  # a factor constant on this split cannot be swapped
      a, b = different_label_pairs(labels, s.num_pairs, rng)
      swapped = inference.decode(self.ctx.model, params, codes.content_mu[a], codes.style_mu[b])
      fractions = swap_fractions(self.judges[name].predict(swapped), labels[a], labels[b])
      accuracy = self.judge_accuracy[name]
      if name == "group":
        metrics.update(fractions)
        metrics["classifier_accuracy"] = accuracy
        continue
      metrics[f"{name}/content_source"] = fractions["content"]
      metrics[f"{name}/style_source"] = fractions["style"]
      metrics[f"{name}/classifier_accuracy"] = accuracy
      right_source.append(fractions["content" if name in self.content_factors else "style"])
    if right_source:
      metrics["factor_consistency"] = float(np.mean(right_source))
    return metrics
