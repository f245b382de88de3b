"""A Markdown report of one evaluation: a table per protocol, and the image grids."""

from __future__ import annotations

import collections
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
