"""Procedural dSprites-like images, rendered in numpy from their ground-truth factors.

Every image is a pure function of its six factor indices, so `grouped_shapes` can store the
factors next to the pixels and disentanglement metrics can trust them. Shapes are
anti-aliased (2x2 supersampling), which keeps the centre of mass a smooth function of the
position factors even at 32 pixels.
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y", "brightness")
FACTOR_SIZES = (3, 6, 40, 32, 32, 4)
SHAPE_NAMES = ("square", "ellipse", "heart")
# Turns that leave each shape unchanged: a square turned by a quarter, an ellipse by a half.
SYMMETRY_ORDERS = (4, 2, 1)
ROTATION_PHASES = 10  # evaluation's rotation levels: a square's 10 distinct rotations
SCALES = np.linspace(0.5, 1.0, FACTOR_SIZES[1])
ROTATIONS = np.arange(FACTOR_SIZES[2]) * (2 * np.pi / FACTOR_SIZES[2])
POSITIONS = np.linspace(0.25, 0.75, FACTOR_SIZES[3])  # centre, as a fraction of the width
BRIGHTNESSES = np.linspace(0.55, 1.0, FACTOR_SIZES[5])
_MAX_HALF_SIZE = 0.18  # half-size of a scale-1 shape, as a fraction of the width
_SUPERSAMPLE = 2
_CHUNK = 256


def sample_factors(rng: np.random.Generator, num: int) -> np.ndarray:
  """[num, 6] int32 factor indices, each uniform over its levels and independent."""
  return np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES], axis=1).astype(np.int32)


def identifiable_factors(factors: np.ndarray) -> np.ndarray:
  """`factors` [n, 6] with the rotation replaced by its phase within the shape's symmetry
  period, in ROTATION_PHASES levels: renders a symmetry apart (a square turned by a quarter,
  an ellipse by a half) are the same image, so no code can tell those labels apart. Equal
  levels for every shape keep the label's distribution free of the shape (taking each index
  modulo its period instead would let a code that knows the shape read the label's range)."""
  out = np.array(factors, copy=True)
  period = FACTOR_SIZES[2] // np.asarray(SYMMETRY_ORDERS)[out[:, 0]]
  out[:, 2] = out[:, 2] % period * ROTATION_PHASES // period
  return out


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Whether points (u, v) in a shape's own frame (unit half-size, y down) are inside it."""
  if shape == 0:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8
  if shape == 1:
    return u**2 + (v / 0.55) ** 2 <= 1.0
  hx, hy = 1.2 * u, -1.2 * v + 0.1  # the implicit heart curve is drawn with y up
  return (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0


def _render_chunk(factors: np.ndarray, resolution: int) -> np.ndarray:
  sub = resolution * _SUPERSAMPLE
  grid = ((np.arange(sub) + 0.5) / sub).astype(np.float32)
  px, py = grid[None, None, :], grid[None, :, None]  # x along width, y along height (down)
  level = lambda values, j: values.astype(np.float32)[factors[:, j]][:, None, None]
  theta, half = level(ROTATIONS, 2), _MAX_HALF_SIZE * level(SCALES, 1)
  dx, dy = px - level(POSITIONS, 3), py - level(POSITIONS, 4)
  cos, sin = np.cos(theta) / half, np.sin(theta) / half
  u, v = cos * dx + sin * dy, cos * dy - sin * dx
  coverage = np.zeros(u.shape, np.float32)
  for shape in range(FACTOR_SIZES[0]):
    rows = factors[:, 0] == shape
    coverage[rows] = _inside(shape, u[rows], v[rows])
  coverage = coverage.reshape(len(factors), resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE)
  return coverage.mean(axis=(2, 4)) * level(BRIGHTNESSES, 5)


def render(factors: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 images [n, R, R, 1] of the shapes described by `factors` [n, 6]."""
  out = np.empty((len(factors), resolution, resolution, 1), np.uint8)
  for start in range(0, len(factors), _CHUNK):
    chunk = _render_chunk(factors[start:start + _CHUNK], resolution)
    out[start:start + _CHUNK, ..., 0] = np.round(chunk * 255).astype(np.uint8)
  return out
