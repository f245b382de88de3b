"""Evaluation protocols, selected by name in `config.eval.evaluators`.

`run_evaluators` runs each protocol on a trained model and writes `eval/metrics.json`,
`eval/report.md` and the image grids into the output directory.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Callable

import ml_collections

from mlvae_jax.evaluation.accumulation import accumulation_curve
from mlvae_jax.evaluation.classification import latent_classification
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.disentanglement import factor_disentanglement
from mlvae_jax.evaluation.heldout_elbo import heldout_elbo
from mlvae_jax.evaluation.images import image_grids
from mlvae_jax.evaluation.report import headline, write_report
from mlvae_jax.models import MLVAE

__all__ = ["EVALUATORS", "EvalContext", "evaluator_names", "headline", "run_evaluators"]

EVALUATORS: dict[str, Callable[[EvalContext], dict[str, float]]] = {
    "elbo": heldout_elbo,
    "classify": latent_classification,
    "accumulation": accumulation_curve,
    "disentanglement": factor_disentanglement,
    "images": image_grids,
}


def evaluator_names(config: ml_collections.ConfigDict) -> list[str]:
  """The configured protocols; unknown names fail before any training starts."""
  names = [name.strip() for name in config.eval.evaluators.split(",") if name.strip()]
  unknown = [name for name in names if name not in EVALUATORS]
  if unknown:
    raise ValueError(
        f"config.eval.evaluators names unknown protocols {unknown}; choose from {sorted(EVALUATORS)}"
    )
  return names


def run_evaluators(
    config: ml_collections.ConfigDict, params: Any, model: MLVAE, workdir: str | pathlib.Path,
    step: int | None = None,
) -> dict[str, float]:
  """Runs the configured protocols; returns `{'<protocol>/<metric>': value}` and writes a report."""
  output_dir = pathlib.Path(workdir) / "eval"
  output_dir.mkdir(parents=True, exist_ok=True)
  ctx = EvalContext(config=config, model=model, params=params, output_dir=output_dir)
  metrics: dict[str, float] = {}
  timings: dict[str, float] = {}
  for name in evaluator_names(config):
    start = time.perf_counter()
    for key, value in EVALUATORS[name](ctx).items():
      metrics[f"{name}/{key}"] = float(value)
    timings[name] = time.perf_counter() - start
  (output_dir / "metrics.json").write_text(json.dumps({"step": step, **metrics}, indent=2) + "\n")
  write_report(output_dir / "report.md", config, metrics, timings, step)
  return metrics
