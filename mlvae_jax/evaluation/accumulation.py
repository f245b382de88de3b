"""Accumulation curve: how group identification improves as strategy 2 pools more members.

For every group value of the held-out split (unseen groups when the config holds some out,
else the test split), k support observations are pooled into one content posterior (product
of Normals); every other observation is assigned to the pooled posterior under which its own
content mean is most likely. Accuracy should rise, and the pooled variance fall, with k.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mlvae_jax import groups, inference
from mlvae_jax.evaluation.context import EvalContext

SUPPORT_SIZES = (1, 2, 4, 8, 16)
REPEATS = 5


def _pool(mu: np.ndarray, logvar: np.ndarray, support: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Product-of-Normals content posterior of each support set."""
  index = np.concatenate(support)
  ids = np.repeat(np.arange(len(support), dtype=np.int32), [len(s) for s in support])
  pooled = groups.accumulate_evidence(
      jnp.asarray(mu[index]), jnp.asarray(logvar[index]), jnp.asarray(ids), len(support),
      jnp.ones(len(index), bool),
  )
  return np.asarray(pooled[0]), np.asarray(pooled[1])


def _assign(query_mu, query_logvar, group_mu, group_logvar) -> np.ndarray:
  """Most likely group for each query: log N(mu_q; mu_G, var_G + var_q), summed over dims."""
  var = np.exp(group_logvar)[None] + np.exp(query_logvar)[:, None]
  log_density = -0.5 * np.sum((query_mu[:, None] - group_mu[None]) ** 2 / var + np.log(var), axis=-1)
  return np.argmax(log_density, axis=1)


def accumulation_curve(ctx: EvalContext) -> dict[str, float]:
  split_name = "unseen" if ctx.has_split("unseen") else "test"
  split = ctx.split(split_name)
  code = inference.content_strategy1(ctx.model, ctx.params, split.x)
  values, counts = np.unique(split.labels, return_counts=True)
  rng = np.random.default_rng(ctx.config.seed)
  metrics: dict[str, float] = {"num_groups": float(len(values))}
  for k in SUPPORT_SIZES:
    if counts.min() <= k:
      break
    correct, total, pooled_logvar = 0, 0, []
    for _ in range(REPEATS):
      support = [rng.choice(np.nonzero(split.labels == v)[0], k, replace=False) for v in values]
      group_mu, group_logvar = _pool(code.mu, code.logvar, support)
      queries = np.setdiff1d(np.arange(len(split.labels)), np.concatenate(support))
      predicted = values[_assign(code.mu[queries], code.logvar[queries], group_mu, group_logvar)]
      correct += int(np.sum(predicted == split.labels[queries]))
      total += len(queries)
      pooled_logvar.append(float(np.mean(group_logvar)))
    metrics[f"{split_name}_accuracy_k{k}"] = correct / total
    metrics[f"{split_name}_content_logvar_k{k}"] = float(np.mean(pooled_logvar))
  metrics["chance"] = 1.0 / len(values)
  return metrics
