"""How much of an object's rotation survives in its canonical frame? A 5-NN probe on the pixels.

`model.pose_from='moments'` shows the encoder each image turned back by its moment angle
(`mlvae_jax/canonical.py`). If a turned render were the render turned, every rotation of one
object would give the same frame and content could not read the rotation. This tool renders
fresh grouped_shapes objects of each shape (random scale, place, rotation, brightness), builds
their canonical frames three ways: turned back by the moment angle, by the true angle (the
rendered rotation, on the moment angle's branch of the shape's symmetry), and by the moment
angle of the image blurred first (Gaussian, `--blur` pixels sd), and prints, per shape, the
gain over the majority rate of a 5-NN probe of the rotation phase from the frame's pixels,
fitted on half of each scale's renders and scored on the other half, averaged over scales
(docs/shapes/README.md). What the true-angle row keeps is the render's own angle dependence,
not the pose's error.

    python tools/frame_phase_probe.py [--examples=6000] [--blur=0.7] [--json=OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from mlvae_jax import canonical
from mlvae_jax.data import shapes
from mlvae_jax.evaluation.disentanglement import normalised_gain
from mlvae_jax.evaluation.probes import majority_rate, probe_accuracy

_HARMONICS = (1, 2, 3, 4)
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


def shape_row(shape: int, examples: int, blur: float, seed: int) -> dict[str, float]:
  """The three frames' phase gains for `examples` fresh renders of `shape`."""
  factors = shapes.sample_factors(np.random.default_rng(seed), examples)
  factors[:, 0] = shape
  images = jnp.asarray(shapes.render(factors, _RESOLUTION) / 255.0, jnp.float32)
  angle, centres = canonical.canonical_pose(images, _HARMONICS)
  period = 2 * np.pi / shapes.SYMMETRY_ORDERS[shape]
  true_angle = -shapes.ROTATIONS[factors[:, _ROTATION]]  # the moment angle turns against it
  true_angle = true_angle + period * np.round((np.asarray(angle) - true_angle) / period)
  blurred = gaussian_blur(images, blur)
  blurred_angle, blurred_centres = canonical.canonical_pose(blurred, _HARMONICS)
  return {
      "moment_angle": phase_gain(frames(images, angle, centres), factors),
      "true_angle": phase_gain(frames(images, jnp.asarray(true_angle, jnp.float32), centres),
                               factors),
      "blurred_first": phase_gain(frames(blurred, blurred_angle, blurred_centres), factors),
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
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"examples": args.examples, "blur": args.blur, "seed": args.seed,
                 "phase_gain": table}, f, indent=1)


if __name__ == "__main__":
  main()
