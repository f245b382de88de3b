r"""The methods x datasets table of issue 27: DCI disentanglement and MIG (and the factor gains
beside the parameter-free baseline) for ML-VAE, GVAE, Ada-ML-VAE, Ada-GVAE, the iid VAE and
the experiment's own default, on pairs and on larger groups, over 5 seeds.

Two uses. As a sweep file, one sweep per dataset (each point its own run, 2 x 6 x 5 = 60
runs per dataset; rerunning skips finished points):

  python launch.py --config=experiments/shapes.py:paper --mode=sweep \
      --sweep=tools/factor_table.py:shapes --workdir=/tmp/table/shapes
  python launch.py --config=experiments/scenes.py:paper --mode=sweep \
      --sweep=tools/factor_table.py:scenes --workdir=/tmp/table/scenes

(`--sweep_parallel=K` runs K at once; each sweep writes results.json with the mean and 95%
t-interval of every metric over the seeds.) Then as a script, the table from those sweeps:

  python tools/factor_table.py /tmp/table/shapes /tmp/table/scenes --out=/tmp/table/table.md

The sweep arg is `shapes|scenes[,seeds=N][,steps=N]`: the dataset names whose experiment
default is the 'best variant' row (its preset's overrides on top of the `paper` config).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from mlvae_jax import results_table  # noqa: E402
from mlvae_jax.config_helpers import load_module  # noqa: E402

METHODS = {
    "ML-VAE": {"objective.variant": "mlvae"},
    "GVAE": {"objective.variant": "gvae"},
    "Ada-ML-VAE": {"objective.variant": "ada_mlvae"},
    "Ada-GVAE": {"objective.variant": "ada_gvae"},
    "VAE (iid)": {"objective.variant": "vae"},
}
GROUPINGS = {
    "pairs": {"data.group_policy": "fixed", "data.group_size": 2},
    "groups 2-16": {"data.group_policy": "uniform"},
}
EXPERIMENTS = {"shapes": "experiments/shapes.py", "scenes": "experiments/scenes.py"}
METRICS = ("suite/dci_disentanglement/full", "suite/mig/full", "disentanglement/score",
           "baseline/score")


def _parse(arg: str | None) -> tuple[str, int, int]:
  name, seeds, steps = "", 5, 0
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key in EXPERIMENTS and not value:
      name = key
    elif key in ("seeds", "steps") and value.isdigit():
      seeds, steps = (int(value), steps) if key == "seeds" else (seeds, int(value))
    else:
      raise ValueError(f"factor_table sweep arg item {item!r} is unknown; use "
                       f"{'|'.join(EXPERIMENTS)}[,seeds=N][,steps=N]")
  if not name:
    raise ValueError(f"factor_table's sweep arg names no dataset; add one of {list(EXPERIMENTS)}")
  return name, seeds, steps


def methods(dataset: str) -> dict[str, dict[str, Any]]:
  """Row label -> overrides: the five methods, and the experiment's default preset."""
  default = load_module(str(ROOT / EXPERIMENTS[dataset])).PRESETS["default"]
  return {**METHODS, "default preset": {**default, "objective.variant": "mlvae"}}


def get_sweep(arg: str | None = None) -> list[dict[str, Any]]:
  """Every (method, grouping, seed) point for one dataset (module docstring)."""
  dataset, seeds, steps = _parse(arg)
  points = []
  for method in methods(dataset).values():
    for grouping in GROUPINGS.values():
      for seed in range(seeds):
        point = {**method, **grouping, "seed": seed}
        if steps:
          point["train.num_steps"] = steps
        points.append(point)
  return points


def _label(setting: str, dataset: str) -> tuple[str, str]:
  """(method, grouping) of a results row's setting text."""
  point = dict(item.split("=", 1) for item in setting.split(", "))
  found = {"method": "?", "grouping": "?"}
  for kind, table in (("method", methods(dataset)), ("grouping", GROUPINGS)):
    for label, overrides in table.items():  # the default preset, last, holds ML-VAE's key too
      if all(point.get(k) == str(v) for k, v in overrides.items()):
        found[kind] = label
  return found["method"], found["grouping"]


def table(sweeps: Sequence[pathlib.Path]) -> str:
  """Markdown: one row per (dataset, method, grouping), mean [95% interval] (seeds) per metric."""
  lines = ["| dataset | method | groups | " + " | ".join(METRICS) + " |",
           "|" + "---|" * (3 + len(METRICS))]
  for sweep in sweeps:
    rows = json.loads((sweep / results_table.JSON_FILE).read_text())
    dataset = next((d for d in EXPERIMENTS if d in sweep.name), "shapes")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
      if row["metric"] in METRICS:
        text = f"{row['mean']:.3f}"
        if row["n"] >= 2:
          text += f" [{row['low']:.3f}, {row['high']:.3f}]"
        cells.setdefault(_label(row["setting"], dataset), {})[row["metric"]] = f"{text} ({row['n']})"
    for (method, grouping), by in sorted(cells.items()):
      lines.append(f"| {dataset} | {method} | {grouping} | "
                   + " | ".join(by.get(m, "") for m in METRICS) + " |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("sweeps", nargs="+", type=pathlib.Path,
                      help="sweep workdirs (their names say shapes or scenes)")
  parser.add_argument("--out", type=pathlib.Path, help="write the table here too")
  args = parser.parse_args(argv)
  missing = [str(s) for s in args.sweeps if not (s / results_table.JSON_FILE).is_file()]
  if missing:
    parser.error(f"no {results_table.JSON_FILE} in {missing}: run the sweeps first (see --help)")
  text = table(args.sweeps)
  print(text, end="")
  if args.out:
    args.out.write_text(text)


if __name__ == "__main__":
  main()
