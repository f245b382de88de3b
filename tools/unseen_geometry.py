"""Does a trained content code separate held-out groups, and are they compact enough to pool?

For runs trained with `data.unseen_groups`, compares on the 'unseen' split (half the codes fit
a probe, the other half score it): linear and 5-NN probes on content and style means; the
`accumulation` evaluator's pooled-posterior identification against a plain nearest centroid
of the same k support means, and against rules that change one part of the pooled one (its
precision-weighted mean, its variance-weighted distance; see RULES), with the standard
deviation of the pooled accuracy over support draws (how much of a run-to-run difference the
evaluator's draw alone can make); and the mean content log-variance. A code that probes well but
pools badly holds the groups apart without forming one cluster per group
(docs/mnist/study.md, "Where the unseen digits go").

    python tools/unseen_geometry.py WORKDIR [WORKDIR ...] [--repeats=10]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mlvae_jax import data as data_lib
from mlvae_jax import inference
from mlvae_jax.evaluation.accumulation import assign, draw_support
from mlvae_jax.evaluation.probes import probe_all


# Ways to assign a query to one of k-member groups, from the query's content posterior (mu,
# logvar) and the support members' means. "pooled" is the `accumulation` evaluator's (the
# product posterior, the query's variance added); the others change one part of it, to tell
# whether the product's weighted mean or its variance-weighted distance costs accuracy.
RULES = ("pooled", "centroid", "pooled mean, Euclidean", "centroid, query variance",
         "centroid, support spread")


def _nearest(query_mu: np.ndarray, means: np.ndarray) -> np.ndarray:
  return ((query_mu[:, None] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)


def identification(trained: inference.Trained, x: np.ndarray, labels: np.ndarray,
                   content_mu: np.ndarray, content_logvar: np.ndarray, k: int, repeats: int,
                   rng: np.random.Generator) -> tuple[dict[str, float], float]:
  """Accuracy of each of RULES at assigning every non-support example to one of the groups,
  each represented by k random support examples, and the pooled accuracy's standard
  deviation over the `repeats` draws (0 for one draw)."""
  values = np.unique(labels)
  correct = dict.fromkeys(RULES, 0)
  total, per_draw = 0, []
  for _ in range(repeats):
    support, queries = draw_support(labels, values, k, rng)
    pooled = trained.content(x[np.concatenate(support)], np.repeat(np.arange(len(values)), k))
    pooled_mu, pooled_logvar = np.asarray(pooled.mu), np.asarray(pooled.logvar)
    centroids = np.stack([content_mu[s].mean(axis=0) for s in support])
    spread = np.log(np.maximum(np.stack([content_mu[s].var(axis=0) for s in support]), 1e-12))
    query_mu, query_logvar = content_mu[queries], content_logvar[queries]
    predicted = {
        "pooled": assign(query_mu, query_logvar, pooled_mu, pooled_logvar),
        "centroid": _nearest(query_mu, centroids),
        "pooled mean, Euclidean": _nearest(query_mu, pooled_mu),
        "centroid, query variance": assign(query_mu, query_logvar, centroids, pooled_logvar),
        "centroid, support spread": assign(query_mu, query_logvar, centroids, spread),
    }
    for rule, index in predicted.items():
      correct[rule] += int(np.sum(values[index] == labels[queries]))
    per_draw.append(np.mean(values[predicted["pooled"]] == labels[queries]))
    total += len(queries)
  spread_of_draws = float(np.std(per_draw, ddof=1)) if repeats > 1 else 0.0
  return {rule: count / total for rule, count in correct.items()}, spread_of_draws


def report(workdir: str, repeats: int) -> str:
  """One line of measures for the run in `workdir`."""
  trained = inference.load(workdir)
  if not trained.config.data.unseen_groups:
    raise ValueError(f"{workdir} was trained without data.unseen_groups; this tool needs a run "
                     "with held-out groups (e.g. --config.data.unseen_groups=7,8,9)")
  split = data_lib.load_split(trained.config.data, "unseen")
  code = trained.encode(split.x)
  content_mu, content_logvar = np.asarray(code.content_mu), np.asarray(code.content_logvar)
  rng = np.random.default_rng(0)
  order = rng.permutation(len(split.labels))
  fit, score = order[: len(order) // 2], order[len(order) // 2:]
  parts = []
  for name, features in (("content", content_mu), ("style", np.asarray(code.style_mu))):
    accuracy = probe_all(features[fit], split.labels[fit], features[score], split.labels[score],
                         ("linear", "knn"))
    parts.append(f"{name} lin {accuracy['linear']:.3f} 5-NN {accuracy['knn']:.3f}")
  for k in (1, 16):
    accuracy, spread = identification(trained, split.x, split.labels, content_mu,
                                      content_logvar, k, repeats, rng)
    others = "; ".join(f"{rule} {accuracy[rule]:.3f}" for rule in RULES[2:])
    parts.append(f"k={k} pooled {accuracy['pooled']:.3f} (sd {spread:.3f} a draw) "
                 f"centroid {accuracy['centroid']:.3f} [{others}]")
  parts.append(f"content logvar {content_logvar.mean():.2f}")
  return f"{workdir}: " + ", ".join(parts)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="workdirs of runs with data.unseen_groups set")
  parser.add_argument("--repeats", type=int, default=10, help="support draws per k")
  args = parser.parse_args()
  for workdir in args.workdirs:
    try:
      print(report(workdir, args.repeats), flush=True)
    except (OSError, ValueError) as e:  # no run there, or not one with held-out groups
      sys.exit(f"unseen_geometry.py: {str(e).strip().splitlines()[0]}")


if __name__ == "__main__":
  main()
