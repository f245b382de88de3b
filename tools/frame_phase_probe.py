"""How much of an object's rotation survives in its canonical frame? A 5-NN probe on the pixels.

`model.pose_from='moments'` shows the encoder each image turned back by its moment angle
(`mlvae_jax/pose/canonical.py`). If a turned render were the render turned, every rotation of one
object would give the same frame and content could not read the rotation. This tool renders
fresh grouped_shapes objects of each shape (random scale, place, rotation, brightness), builds
their canonical frames three ways: turned back by the moment angle, by the true angle (the
rendered rotation, on the moment angle's branch of the shape's symmetry), and by the moment
angle of the image blurred first (Gaussian, `--blur` pixels sd), and prints, per shape, the
gain over the majority rate of a 5-NN probe of the rotation phase from the frame's pixels,
fitted on half of each scale's renders and scored on the other half, averaged over scales
(docs/shapes/README.md). What the true-angle row keeps is the render's own angle dependence,
not the pose's error. A second table gives, per shape and angle rule (`model.canonical_angle`),
the fraction of renders whose moment angle agrees with the rendered rotation modulo the
shape's symmetry (within 15 degrees of the renders' common offset), overall and by scale.

    python tools/frame_phase_probe.py [--examples=6000] [--blur=0.7] [--json=OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlvae_jax.pose import canonical
from mlvae_jax import configs
from mlvae_jax.data import shapes
from mlvae_jax.evaluation.disentanglement import normalised_gain
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy

_HARMONICS = canonical.parse_harmonics(configs.base_config().model.canonical_harmonics)
_RESOLUTION = 32
_ROTATION = shapes.FACTOR_NAMES.index("rotation")
_SCALE = shapes.FACTOR_NAMES.index("scale")


def gaussian_blur(images: jax.Array, sd: float) -> jax.Array:
  """`images` [N, H, W, 1] convolved with a normalised Gaussian of `sd` pixels (3 sd wide)."""
  radius = max(1, int(np.ceil(3 * sd)))
  taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sd**2))
  kernel = np.outer(taps, taps) / np.sum(taps) ** 2
  return jax.lax.conv_general_dilated(images, jnp.asarray(kernel[:, :, None, None], images.dtype),
                                      (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def frames(images: jax.Array, angle: jax.Array, centres: jax.Array) -> np.ndarray:
  return np.asarray(canonical.to_canonical_frame(images, angle, centres)).reshape(len(images), -1)


def phase_gain(pixels: np.ndarray, factors: np.ndarray) -> float:
  """5-NN gain of the rotation phase from `pixels`, half of each scale's rows fitted and half
  scored, averaged over scales."""
  phase = shapes.identifiable_factors(factors)[:, _ROTATION]
  gains = []
  for scale in np.unique(factors[:, _SCALE]):
    rows = np.flatnonzero(factors[:, _SCALE] == scale)
    fit, test = rows[: len(rows) // 2], rows[len(rows) // 2:]
    accuracy = probe_accuracy(pixels[fit], phase[fit], pixels[test], phase[test], "knn")
    gains.append(normalised_gain(accuracy, majority_rate(phase[test])))
  return float(np.mean(gains))


def agreement(angle: np.ndarray, true_angle: np.ndarray, factors: np.ndarray, period: float
              ) -> list[float]:
  """[overall, then by scale] fractions of `angle` within 15 degrees of `true_angle` plus the
  renders' common offset (the circular mean of the offsets near their median), modulo
  `period`."""
  offset = np.mod(angle - true_angle, period)
  turns = np.exp(2j * np.pi * offset / period)
  near = np.abs(np.angle(turns * np.exp(-2j * np.pi * np.median(offset) / period))) < 0.3
  gap = np.abs(np.angle(turns / np.exp(1j * np.angle(np.mean(turns[near]))))) * period / (2 * np.pi)
  agree = gap < np.radians(15)
  return [float(np.mean(agree))] + [float(np.mean(agree[factors[:, _SCALE] == scale]))
                                    for scale in np.unique(factors[:, _SCALE])]


def shape_row(shape: int, examples: int, blur: float, seed: int) -> dict[str, Any]:
  """The three frames' phase gains and each angle rule's agreement for `examples` fresh
  renders of `shape`."""
  factors = shapes.sample_factors(np.random.default_rng(seed), examples)
  factors[:, 0] = shape
  images = jnp.asarray(shapes.render(factors, _RESOLUTION) / 255.0, jnp.float32)
  angle, centres = canonical.canonical_pose(images, _HARMONICS)
  period = 2 * np.pi / shapes.SYMMETRY_ORDERS[shape]
  true_angle = -shapes.ROTATIONS[factors[:, _ROTATION]]  # the moment angle turns against it
  on_branch = true_angle + period * np.round((np.asarray(angle) - true_angle) / period)
  blurred = gaussian_blur(images, blur)
  blurred_angle, blurred_centres = canonical.canonical_pose(blurred, _HARMONICS)
  return {
      "moment_angle": phase_gain(frames(images, angle, centres), factors),
      "true_angle": phase_gain(frames(images, jnp.asarray(on_branch, jnp.float32), centres),
                               factors),
      "blurred_first": phase_gain(frames(blurred, blurred_angle, blurred_centres), factors),
      "agreement": {rule: agreement(np.asarray(canonical.canonical_pose(images, _HARMONICS, rule)[0]),
                                    true_angle, factors, period)
                    for rule in canonical.ANGLE_RULES},
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=6000, help="renders per shape")
  parser.add_argument("--blur", type=float, default=0.7, help="Gaussian sd in pixels, > 0")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="also write the table here")
  args = parser.parse_args()
  if args.examples < 12 * len(shapes.SCALES) or args.blur <= 0:
    sys.exit(f"frame_phase_probe.py: --examples={args.examples} and --blur={args.blur}: the "
             f"probe needs at least {12 * len(shapes.SCALES)} renders per shape (a dozen per "
             "scale) and a blur sd above 0 pixels")
  table = {name: shape_row(index, args.examples, args.blur, args.seed + index)
           for index, name in enumerate(shapes.SHAPE_NAMES)}
  columns = ("moment_angle", "true_angle", "blurred_first")
  print("shape | " + " | ".join(columns))
  for name, row in table.items():
    print(f"{name} | " + " | ".join(f"{row[column]:.3f}" for column in columns), flush=True)
  print("shape | rule | angle agreement | by scale")
  for name, row in table.items():
    for rule, (overall, *by_scale) in row["agreement"].items():
      print(f"{name} | {rule} | {overall:.3f} | " + " ".join(f"{v:.2f}" for v in by_scale))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"examples": args.examples, "blur": args.blur, "seed": args.seed,
                 "phase_gain": {name: {c: row[c] for c in columns} for name, row in table.items()},
                 "angle_agreement": {name: row["agreement"] for name, row in table.items()}},
                f, indent=1)


if __name__ == "__main__":
  main()
