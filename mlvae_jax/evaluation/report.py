"""A Markdown report of one evaluation (a table per evaluator, then every picture written
beside it), and the headline a run prints."""

from __future__ import annotations

import collections
import os
import pathlib

import ml_collections

from mlvae_jax import configs


def write_report(
    path: pathlib.Path, config: ml_collections.ConfigDict, metrics: dict[str, float],
    timings: dict[str, float], step: int | None, checkpoint: str | None = None,
) -> None:
  """`metrics` are '<evaluator>/<metric>'; `timings` the seconds each evaluator took."""
  by_evaluator: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
  for key, value in metrics.items():
    name, _, metric = key.partition("/")
    by_evaluator[name].append((metric, value))
  lines = [
      f"# Evaluation of {config.data.name} / {config.objective.variant}"
      + (f" at step {step}" if step is not None else ""),
      "",
      f"model: {config.model.family}, content {config.model.content_dim}-d, style "
      f"{config.model.style_dim}-d, {config.model.likelihood} likelihood",
      "",
  ]
  if checkpoint:
    lines += [f"checkpoint: {checkpoint}", ""]
  lines += [heldout_line(config.evals_split), ""]
  for name, rows in by_evaluator.items():
    entry = config.evals[name]
    split = configs.resolve_split(entry.split, config)
    lines += [f"## {name}: {entry.type} on {split} ({timings.get(name, 0.0):.1f} s)", "",
              "| metric | value |", "| --- | --- |"]
    lines += [f"| {metric} | {value:.4f} |" for metric, value in rows]
    lines.append("")
  for image in sorted(path.parent.glob("*.png")):
    lines += [f"![{image.name}]({image.name})", ""]
  path.write_text("\n".join(lines))


def heldout_line(evals_split: str) -> str:
  """Which split the held-out numbers are of, and whether they may be used to choose."""
  use = ("for choosing settings" if evals_split == "validation"
         else "to report a setting chosen on validation; never to choose")
  return f"held-out split: {evals_split} (config.evals_split; {use})"


HEADLINE_KEYS = (
    "val/elbo", "test/elbo", "test/bits_per_dim", "classify/content_accuracy",
    "classify/content_knn", "classify/style_accuracy", "classify/style_knn",
    "swap/content", "swap/classifier_accuracy", "swap/factor_consistency",
    "style_transfer/slant/ratio", "style_transfer/width/ratio",
    "style_transfer/thickness/ratio", "style_transfer/retrieval",
    "disentanglement/score",
)


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
  """The numbers people compare first: ELBO, probes, and the ends of accumulation curves."""
  shown = {key: metrics[key] for key in HEADLINE_KEYS if key in metrics}
  curves: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
  for key in metrics:
    name, _, metric = key.partition("/")
    if metric.startswith("accuracy_k"):
      curves[name].append((int(metric[len("accuracy_k"):]), key))
  for points in curves.values():
    points.sort()
    for _, key in points[:1] + points[-1:]:
      shown[key] = metrics[key]
  return shown


def headline(metrics: dict[str, float], report: str | None = None,
             evals_split: str | None = None) -> str:
  """A few lines for the console at the end of a run or an evaluation; `evals_split` (the
  config's) names the split of the held-out numbers."""
  shown = ", ".join(f"{key} {value:.4g}" for key, value in headline_metrics(metrics).items())
  lines = [f"step {int(metrics.get('step', 0))}: {shown}"]
  if evals_split:
    lines.append(heldout_line(evals_split))
  if report and os.path.exists(report):
    lines.append(f"report: {report}")
  return "\n".join(lines)
