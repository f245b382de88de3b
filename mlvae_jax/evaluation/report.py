"""A Markdown report of one evaluation: a table per protocol, and the image grids."""

from __future__ import annotations

import collections
import os
import pathlib

import ml_collections


def write_report(
    path: pathlib.Path, config: ml_collections.ConfigDict, metrics: dict[str, float],
    timings: dict[str, float], step: int | None,
) -> None:
  by_protocol: dict[str, list[tuple[str, float]]] = collections.defaultdict(list)
  for key, value in metrics.items():
    protocol, _, name = key.partition("/")
    by_protocol[protocol].append((name, value))
  lines = [
      f"# Evaluation of {config.data.name} / {config.objective.variant}"
      + (f" at step {step}" if step is not None else ""),
      "",
      f"model: {config.model.family}, content {config.model.content_dim}-d, style "
      f"{config.model.style_dim}-d, {config.model.likelihood} likelihood",
      "",
  ]
  for protocol, rows in by_protocol.items():
    lines += [f"## {protocol} ({timings.get(protocol, 0.0):.1f} s)", "", "| metric | value |",
              "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in rows]
    lines.append("")
  for image in ("swap.png", "reconstructions.png"):
    if (path.parent / image).exists():
      lines += [f"![{image}]({image})", ""]
  path.write_text("\n".join(lines))


HEADLINE_KEYS = (
    "val/elbo", "elbo/test/elbo", "elbo/test/bits_per_dim", "classify/content_accuracy",
    "classify/style_accuracy", "disentanglement/score",
)


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
  """The numbers people compare first: ELBO, probes, and the ends of the accumulation curve."""
  shown = {key: metrics[key] for key in HEADLINE_KEYS if key in metrics}
  curve = sorted(
      (int(key.rsplit("_k", 1)[1]), key) for key in metrics
      if key.startswith("accumulation/") and "_accuracy_k" in key
  )
  for _, key in curve[:1] + curve[-1:]:
    shown[key] = metrics[key]
  return shown


def headline(metrics: dict[str, float], workdir: str) -> str:
  """A few lines for the console at the end of a run."""
  shown = ", ".join(f"{key} {value:.4g}" for key, value in headline_metrics(metrics).items())
  lines = [f"step {int(metrics.get('step', 0))}: {shown}"]
  if os.path.exists(os.path.join(workdir, "eval", "report.md")):
    lines.append(f"report: {os.path.join(workdir, 'eval', 'report.md')}")
  return "\n".join(lines)
