"""Seed tables: the mean and 95% interval of every final metric over a sweep's seeds.

A sweep with a `seed` axis runs each setting (a point without its seed) several times; one
run's number is one draw, so settings are compared, and goals judged, by the mean over seeds
and its Student-t interval (mean +- t_{0.975, n-1} s / sqrt(n)). A goal of the form
'metric >= x' is met when the interval's lower end clears x ('<= x': its upper end).
The sweep tool writes WORKDIR/results.json, results.csv and results.md (`write`), each row
naming the split its runs measured (config.evals_split), so a table of validation numbers
cannot pass for a test report.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from mlvae_jax.evaluation.report import headline_metrics
from mlvae_jax.training.workdir import CONFIG_FILE, FINAL_METRICS_FILE, read_json

JSON_FILE, CSV_FILE, MARKDOWN_FILE = "results.json", "results.csv", "results.md"
SEED_KEY = "seed"
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
  """Mean of `n` values and the two-sided Student-t interval around it (nan when n < 2)."""

  n: int
  mean: float
  sd: float
  low: float
  high: float


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
  """The mean of the finite `values` and its t-interval; n counts only finite values, and
  fewer than two give a nan sd and interval (one run has no spread to measure)."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence} must be in (0, 1), e.g. 0.95")
  x = np.asarray(values, np.float64).reshape(-1)
  x = x[np.isfinite(x)]
  n = len(x)
  if n == 0:
    return Interval(0, math.nan, math.nan, math.nan, math.nan)
  mean = float(x.mean())
  if n < 2:
    return Interval(1, mean, math.nan, math.nan, math.nan)
  sd = float(x.std(ddof=1))
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
  return Interval(n, mean, sd, mean - half, mean + half)


def goal_met(interval: Interval, goal: str) -> bool:
  """Whether `goal` ('>= 0.97' or '<= 0.15') holds for the whole interval."""
  op, _, threshold = goal.strip().partition(" ")
  if op not in (">=", "<="):
    raise ValueError(f"goal {goal!r} must read '>= X' or '<= X' (a space after the operator)")
  bound = interval.low if op == ">=" else interval.high
  if math.isnan(bound):
    return False
  return bound >= float(threshold) if op == ">=" else bound <= float(threshold)


def setting_name(point: Mapping[str, Any]) -> str:
  """A setting's label: the point's overrides without its seed ('default' if none)."""
  return ", ".join(f"{k}={v}" for k, v in point.items() if k != SEED_KEY) or "default"


def seed_rows(runs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any], str]],
              metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """One row per (setting, metric) from `runs` of (point, final metrics, evals_split): the
  seeds, split and t-interval. `metrics` defaults to every numeric metric but 'step'.
  Runs of one setting on different splits are never pooled (the split is part of the key)."""
  grouped: dict[tuple[str, str], list[tuple[Any, Mapping[str, Any]]]] = collections.defaultdict(list)
  for point, final, split in runs:
    grouped[(setting_name(point), split)].append((point.get(SEED_KEY, ""), final))
  rows = []
  for (setting, split), members in grouped.items():
    names = metrics or sorted({k for _, final in members for k, v in final.items()
                               if k != "step" and isinstance(v, (int, float))})
    for metric in names:
      values = [float(final[metric]) if metric in final else math.nan for _, final in members]
      interval = t_interval(values)
      rows.append({"setting": setting, "split": split, "metric": metric,
                   "seeds": [seed for seed, _ in members], **dataclasses.asdict(interval)})
  return rows


def markdown(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
  """A table of `metrics` (in that order): mean [low, high] (n) per setting and split."""
  cells: dict[tuple[str, str], dict[str, str]] = collections.defaultdict(dict)
  for row in rows:
    if row["metric"] in metrics:
      text = f"{row['mean']:.4g}"
      if row["n"] >= 2:
        text += f" [{row['low']:.4g}, {row['high']:.4g}]"
      cells[(row["setting"], row["split"])][row["metric"]] = f"{text} (n={row['n']})"
  header = ["setting", "split", *metrics]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join([setting, split, *(by.get(m, "") for m in metrics)]) + " |"
            for (setting, split), by in cells.items()]
  return (f"Mean [{CONFIDENCE:.0%} t-interval over seeds] (number of seeds).\n\n"
          + "\n".join(lines) + "\n")


def write(workdir: str, points_and_dirs: Sequence[tuple[Mapping[str, Any], str]]) -> bool:
  """Writes results.json / .csv / .md in `workdir` for a sweep with a seed axis, from each
  point's final metrics and config (finished points only); returns whether it wrote them."""
  if not any(SEED_KEY in point for point, _ in points_and_dirs):
    return False
  runs = []
  for point, run_dir in points_and_dirs:
    final = read_json(os.path.join(run_dir, FINAL_METRICS_FILE))
    if final:
      # A config from before config.evals_split read test by default.
      split = (read_json(os.path.join(run_dir, CONFIG_FILE)) or {}).get("evals_split", "test")
      runs.append((point, final, split))
  rows = seed_rows(runs)
  with open(os.path.join(workdir, JSON_FILE), "w") as f:
    json.dump(rows, f, indent=2, allow_nan=True)
  fields = ["setting", "split", "metric", "n", "mean", "sd", "low", "high", "seeds"]
  with open(os.path.join(workdir, CSV_FILE), "w", newline="") as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    writer.writerows({**row, "seeds": " ".join(map(str, row["seeds"]))} for row in rows)
  shown = list(dict.fromkeys(m for _, final, _ in runs for m in headline_metrics(final)))
  with open(os.path.join(workdir, MARKDOWN_FILE), "w") as f:
    f.write(markdown(rows, shown))
  return True
