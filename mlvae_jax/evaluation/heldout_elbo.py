"""The group ELBO on held-out splits, with the training objective and batch shapes."""

from __future__ import annotations

import itertools

import jax
import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax import objectives
from mlvae_jax.evaluation.context import EvalContext

TERMS = ("elbo", "reconstruction", "kl_style", "kl_content", "bits_per_dim")


def heldout_elbo(ctx: EvalContext) -> dict[str, float]:
  """Group-weighted mean of each ELBO term over one epoch of each held-out split.

  `config.eval.num_batches` caps the batches per split (0 = the whole epoch).
  """
  loss_fn = jax.jit(objectives.make_loss_fn(ctx.model, ctx.config))
  rng = jax.random.key(ctx.config.seed + 1)
  limit = ctx.config.eval.num_batches or None
  metrics: dict[str, float] = {}
  for split in ("validation", "test", "unseen"):
    if not ctx.has_split(split):
      continue
    iterator = data_lib.make_batch_iterator(ctx.config.data, split, seed=ctx.config.seed, num_epochs=1)
    per_batch = [
        jax.device_get(loss_fn(ctx.params, batch, jax.random.fold_in(rng, index))[1])
        for index, batch in enumerate(itertools.islice(iterator, limit))
    ]
    weights = np.array([m["num_groups"] for m in per_batch], np.float64)
    for key in TERMS:
      values = np.array([m[key] for m in per_batch], np.float64)
      metrics[f"{split}/{key}"] = float(np.sum(values * weights) / np.sum(weights))
  return metrics
