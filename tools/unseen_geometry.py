"""Does a trained content code separate held-out groups, and are they compact enough to pool?

For runs trained with `data.unseen_groups`, compares on the 'unseen' split (half the codes fit
a probe, the other half score it): linear and 5-NN probes on content and style means; the
`accumulation` evaluator's pooled-posterior identification against a plain nearest centroid
of the same k support means, with the standard deviation of the pooled accuracy over support
draws (how much of a run-to-run difference the evaluator's draw alone can make); and the mean
content log-variance. A code that probes well but
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


def identification(trained: inference.Trained, x: np.ndarray, labels: np.ndarray,
                   content_mu: np.ndarray, content_logvar: np.ndarray, k: int, repeats: int,
                   rng: np.random.Generator) -> tuple[float, float, float]:
  """(pooled posterior, nearest centroid) accuracy of assigning every non-support example to
  one of the groups, each represented by k random support examples, and the pooled
  accuracy's standard deviation over the `repeats` draws (0 for one draw)."""
  values = np.unique(labels)
  pooled_correct = centroid_correct = total = 0
  per_draw = []
  for _ in range(repeats):
    support, queries = draw_support(labels, values, k, rng)
    pooled = trained.content(x[np.concatenate(support)], np.repeat(np.arange(len(values)), k))
    by_pool = values[assign(content_mu[queries], content_logvar[queries],
                            np.asarray(pooled.mu), np.asarray(pooled.logvar))]
    per_draw.append(np.mean(by_pool == labels[queries]))
    centroids = np.stack([content_mu[s].mean(axis=0) for s in support])
    distance = ((content_mu[queries, None] - centroids[None]) ** 2).sum(axis=-1)
    by_centroid = values[distance.argmin(axis=1)]
    pooled_correct += int(np.sum(by_pool == labels[queries]))
    centroid_correct += int(np.sum(by_centroid == labels[queries]))
    total += len(queries)
  spread = float(np.std(per_draw, ddof=1)) if repeats > 1 else 0.0
  return pooled_correct / total, centroid_correct / total, spread


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
    pooled, centroid, spread = identification(trained, split.x, split.labels, content_mu,
                                              content_logvar, k, repeats, rng)
    parts.append(f"k={k} pooled {pooled:.3f} (sd {spread:.3f} a draw) centroid {centroid:.3f}")
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
