"""Latent classification: does the content code (strategy 1, one image) identify the group?

Style should carry little group information, so the style probe is reported beside it.
"""

from __future__ import annotations

from mlvae_jax import inference
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy


def latent_classification(ctx: EvalContext) -> dict[str, float]:
  train, test = ctx.split("train"), ctx.split("test")
  train_post = inference.encode(ctx.model, ctx.params, train.x)
  test_post = inference.encode(ctx.model, ctx.params, test.x)
  return {
      "content_accuracy": probe_accuracy(train_post.content_mu, train.labels, test_post.content_mu, test.labels),
      "style_accuracy": probe_accuracy(train_post.style_mu, train.labels, test_post.style_mu, test.labels),
      "chance": majority_rate(test.labels),
  }
