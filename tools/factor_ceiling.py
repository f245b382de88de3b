"""How much of each factor can one image tell at all? A supervised ceiling for factor goals.

The `disentanglement` evaluator asks a code learnt without labels for each ground-truth factor
of one image; no such code can know more than the image shows. This fits classifiers on real
training images with the factor labels and scores held-out test images: the swap judge's
pixel MLP (trained longer than the evaluator trains it) and the experiment's own encoder
architecture with a softmax head. If they stay below a goal, the goal asks more of one image
than the data holds at that resolution (docs/shapes/README.md).

    python tools/factor_ceiling.py experiments/shapes.py [experiments/shapes.py:resolution=64] \
        [--epochs=20] [--factors=shape,scale]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mlvae_jax import data as data_lib  # noqa: E402
from mlvae_jax.config_helpers import load_module, split_config_spec  # noqa: E402
from mlvae_jax.evaluation.pixel_classifier import encoder_classifier, fit_pixel_classifier  # noqa: E402
from mlvae_jax.evaluation.probes import majority_rate  # noqa: E402


def ceilings(spec: str, factors: list[str] | None, epochs: int, data_dir: str = ""
             ) -> list[dict[str, object]]:
  """One row per factor of the experiment's dataset: majority rate and both classifiers'
  test accuracy."""
  path, arg = split_config_spec(spec)
  config = load_module(path).get_config(arg)
  if data_dir:
    config.data.data_dir = data_dir
  train, test = (data_lib.load_split(config.data, split) for split in ("train", "test"))
  if train.factors is None:
    raise SystemExit(f"{spec}: dataset {config.data.name!r} has no ground-truth factors")
  names = list(train.factor_names)
  unknown = sorted(set(factors or ()) - set(names))
  if unknown:
    raise SystemExit(f"--factors: {unknown} are not factors of {config.data.name}; choose from {names}")
  rows = []
  for name in factors or names:
    j = names.index(name)
    y_train, y_test = train.factors[:, j], test.factors[:, j]
    num_classes = int(y_train.max()) + 1  # what the pixel MLP's fit gives itself
    mlp = fit_pixel_classifier(train.x, y_train, epochs=epochs)
    encoder = fit_pixel_classifier(
        train.x, y_train, epochs=epochs,
        module=encoder_classifier(config.model, train.x.shape[1:], num_classes))
    rows.append({"experiment": spec, "factor": name, "classes": num_classes,
                 "majority": majority_rate(y_test), "pixel_mlp": mlp.accuracy(test.x, y_test),
                 f"encoder_{config.model.family}": encoder.accuracy(test.x, y_test)})
    print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in rows[-1].items()), flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("experiments", nargs="+", help="experiment specs, e.g. experiments/shapes.py:resolution=64")
  parser.add_argument("--epochs", type=int, default=20, help="training passes of each classifier")
  parser.add_argument("--factors", default="", help="comma-separated factors (default: all)")
  parser.add_argument("--data_dir", default="", help="config.data.data_dir (default: the experiment's)")
  args = parser.parse_args()
  for spec in args.experiments:
    ceilings(spec, [f for f in args.factors.split(",") if f] or None, args.epochs, args.data_dir)


if __name__ == "__main__":
  main()
