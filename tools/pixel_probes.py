r"""What the classify evaluator's probes read from raw pixels: the trivial baseline a content
code's accuracy must be set against.

  python tools/pixel_probes.py experiments/digits.py [--splits=validation,test]

The same probes as the `classify` evaluator (evaluation/probes.py: standardised features,
logistic regression, 5-NN), fitted on the flattened pixels of the experiment's train split
and scored on each of --splits, beside the majority rate (chance).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pylint: disable=wrong-import-position
from mlvae_jax import data  # noqa: E402
from mlvae_jax.config_helpers import load_module, split_config_spec  # noqa: E402
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("experiment", help="experiment[:arg], e.g. experiments/digits.py")
  parser.add_argument("--splits", default="validation,test")
  args = parser.parse_args()
  path, arg = split_config_spec(args.experiment)
  config = load_module(str(ROOT / path)).get_config(arg)
  train = data.load_split(config.data, "train")
  print("| split | images | pixels linear | pixels 5-NN | chance |\n|---|---|---|---|---|")
  for split in args.splits.split(","):
    held_out = data.load_split(config.data, split)
    scores = [probe_accuracy(train.x.reshape(len(train.x), -1), train.labels,
                             held_out.x.reshape(len(held_out.x), -1), held_out.labels, kind,
                             seed=config.seed) for kind in ("linear", "knn")]
    print(f"| {split} | {len(held_out.x)} | {scores[0]:.3f} | {scores[1]:.3f} | "
          f"{majority_rate(held_out.labels):.3f} |")


if __name__ == "__main__":
  main()
