"""Does the style code hold each object's rotation? Probes of the rotation phase, shape by shape.

grouped_shapes' rotation label is the phase within the shape's symmetry period
(`shapes.identifiable_factors`), counted from each shape's own reference orientation. A style
code free of the shape can hold the angle only relative to the object, so the evaluators'
probes of the whole style code across shapes read little of it, and a 5-NN probe on the
whole code is swamped by its other dimensions. This tool fits a 5-NN probe of the phase
inside each shape (train split, 10,000 examples at most; scored on the test split) on: the
dedicated warp's angle dimension alone (style dimension 0 of `model.decoder_warp=
'rigid_dedicated'`), the whole style code and the whole content code, and prints each gain
over the majority rate (docs/shapes/README.md).

    python tools/pose_angle_probe.py WORKDIR [WORKDIR ...]
"""

from __future__ import annotations

import argparse
import sys


from mlvae_jax import data as data_lib
from mlvae_jax import inference
from mlvae_jax.data import shapes
from mlvae_jax.evaluation.disentanglement import normalised_gain
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy

_FIT_EXAMPLES = 10000
_ROTATION = shapes.FACTOR_NAMES.index("rotation")


def report(workdir: str) -> str:
  """One line: for each shape, the 5-NN gain of the rotation phase from the angle dimension,
  the whole style code and the whole content code."""
  trained = inference.load(workdir)
  if trained.config.data.name != "grouped_shapes" or trained.config.model.decoder_warp != "rigid_dedicated":
    raise ValueError(f"{workdir} is not a grouped_shapes run with model.decoder_warp="
                     "'rigid_dedicated': it has no angle dimension to probe")
  fit = data_lib.load_split(trained.config.data, "train")
  test = data_lib.load_split(trained.config.data, "test")
  fit_code, test_code = trained.encode(fit.x[:_FIT_EXAMPLES]), trained.encode(test.x)
  fit_factors = fit.factors[:_FIT_EXAMPLES]
  codes = {"angle": (fit_code.style_mu[:, :1], test_code.style_mu[:, :1]),
           "style": (fit_code.style_mu, test_code.style_mu),
           "content": (fit_code.content_mu, test_code.content_mu)}
  parts = []
  for index, name in enumerate(shapes.SHAPE_NAMES):
    fit_rows, test_rows = fit_factors[:, 0] == index, test.factors[:, 0] == index
    fit_labels, test_labels = fit_factors[fit_rows, _ROTATION], test.factors[test_rows, _ROTATION]
    gains = [
        normalised_gain(probe_accuracy(fit_values[fit_rows], fit_labels,
                                       test_values[test_rows], test_labels, "knn"),
                        majority_rate(test_labels))
        for fit_values, test_values in codes.values()]
    parts.append(f"{name}: " + " ".join(f"{code} {gain:.3f}" for code, gain in zip(codes, gains)))
  return f"{workdir} (rotation phase, 5-NN gain within each shape): " + "; ".join(parts)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+", help="workdirs of grouped_shapes runs")
  args = parser.parse_args()
  for workdir in args.workdirs:
    try:
      print(report(workdir), flush=True)
    except (OSError, ValueError) as e:  # no run there, or one without an angle dimension
      sys.exit(f"pose_angle_probe.py: {str(e).strip().splitlines()[0]}")


if __name__ == "__main__":
  main()
