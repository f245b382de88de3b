"""Procedural 3D-Shapes-like scenes (Burgess & Kim 2018), rendered in numpy from their factors.

An object stands on a coloured floor before a coloured corner of two walls; a camera circles
it (the orientation factor is the camera azimuth). Every image is a pure function of its six
factor indices. Unlike grouped_shapes, the picture is never one object on a dark background:
the floor and walls fill it, so image moments of the whole picture say nothing of the pose.

Shapes are shaded 2.5D silhouettes under an orthographic camera and one light fixed in the
world: turning the camera moves the lit side of every object, the faces of the cube and the
walls' corner, so the orientation is visible for every shape (even the sphere). 2x2
supersampling anti-aliases every edge. Colours are fully saturated hues times a Lambertian
shade, so a pixel's chroma (rgb / max channel) is its surface's hue.
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
SHAPE_NAMES = ("cube", "cylinder", "sphere", "capsule")
HUES = np.arange(10) / 10.0  # fraction of the colour wheel
SCALES = np.linspace(0.75, 1.25, FACTOR_SIZES[3])
ORIENTATIONS = np.deg2rad(np.linspace(-30.0, 30.0, FACTOR_SIZES[5]))  # camera azimuth
HORIZON = 0.55  # image rows above this fraction of the height are wall, below floor
BASE = 0.82  # the row, as a fraction of the height, the object stands on
_SIZE = 0.16  # an object's characteristic half-size at scale 1, as a fraction of the width
_CUBE_TURN = np.deg2rad(20.0)  # the cube's own turn, so azimuth 0 shows two faces
_LIGHT = np.array([-0.5, 0.6, 0.62]) / np.linalg.norm([-0.5, 0.6, 0.62])  # world (x, y up, z)
_AMBIENT, _DIFFUSE = 0.45, 0.55
_CORNER_SWING = 0.8  # the walls' corner sits at x = 0.5 - swing * sin(azimuth)
_SUPERSAMPLE = 2
_CHUNK = 128


def sample_factors(rng: np.random.Generator, num: int) -> np.ndarray:
  """[num, 6] int32 factor indices, each uniform over its levels and independent."""
  return np.stack([rng.integers(0, size, num) for size in FACTOR_SIZES], axis=1).astype(np.int32)


def factor_values(factors: np.ndarray) -> np.ndarray:
  """float64 [n, 6] physical values of factor indices [n, 6]: three hues (turns of the wheel),
  the scale, the shape's index and the azimuth in radians."""
  factors = np.asarray(factors)
  columns = (HUES, HUES, HUES, SCALES, np.arange(FACTOR_SIZES[4]), ORIENTATIONS)
  return np.stack([values[factors[:, j]] for j, values in enumerate(columns)], 1).astype(np.float64)


def factor_indices(values: np.ndarray) -> np.ndarray:
  """int32 [n, 6] indices of the levels nearest to physical values [n, 6] (`factor_values`'s
  inverse); hues are taken round the wheel."""
  values = np.asarray(values, np.float64)
  out = np.empty(values.shape, np.int32)
  for j, levels in enumerate((HUES, HUES, HUES, SCALES, np.arange(FACTOR_SIZES[4]), ORIENTATIONS)):
    gap = np.abs(values[:, j:j + 1] - levels[None])
    if j < 3:
      gap = np.minimum(gap, 1.0 - gap)
    out[:, j] = np.argmin(gap, axis=1)
  return out


def hue_rgb(hue: np.ndarray) -> np.ndarray:
  """[..., 3] fully saturated, full-value RGB in [0, 1] of hues in turns (HSV with s = v = 1)."""
  k = (np.asarray(hue)[..., None] * 6.0 + np.array([5.0, 3.0, 1.0])) % 6.0
  return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _shade(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, light: np.ndarray) -> np.ndarray:
  """Lambertian shade in [_AMBIENT, 1] of camera-frame normals under camera-frame light."""
  lx, ly, lz = light
  return _AMBIENT + _DIFFUSE * np.maximum(0.0, nx * lx + ny * ly + nz * lz)


def _camera_light(azimuth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The world light in the frame of cameras turned by `azimuth` [n] about the vertical."""
  cos, sin = np.cos(azimuth), np.sin(azimuth)
  return (cos * _LIGHT[0] - sin * _LIGHT[2], np.full_like(azimuth, _LIGHT[1]),
          sin * _LIGHT[0] + cos * _LIGHT[2])


def _object(shape: int, u: np.ndarray, v: np.ndarray, size: np.ndarray, azimuth: np.ndarray,
            light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(inside, shade) of one shape at points (u right, v up from its base; [m, H, W]) for
  objects of half-size `size` [m, 1, 1] seen from `azimuth` [m, 1, 1]."""
  if shape == 0:  # a cube of half-size 0.75 s, turned by _CUBE_TURN - azimuth before the camera
    a = 0.75 * size
    turn = _CUBE_TURN - azimuth
    # The front faces' normals (x, z): the two of the four at turn + k pi/2 facing the camera.
    best_depth = np.full(np.broadcast_shapes(u.shape, a.shape), np.inf, np.float32)
    normal_x, normal_z = np.zeros_like(best_depth), np.zeros_like(best_depth)
    for k in range(4):
      nx, nz = np.cos(turn + k * np.pi / 2), np.sin(turn + k * np.pi / 2)
      facing = nz > 1e-6
      depth = np.where(facing, (a - nx * u) / np.where(facing, nz, 1.0), np.inf)
      nearer = depth < best_depth  # the front surface is the lowest of the facing planes
      best_depth = np.where(nearer, depth, best_depth)
      normal_x = np.where(nearer, nx, normal_x)
      normal_z = np.where(nearer, nz, normal_z)
    half_width = a * (np.abs(np.cos(turn)) + np.abs(np.sin(turn)))
    inside = (np.abs(u) <= half_width) & (v >= 0) & (v <= 2 * a)
    return inside, _shade(normal_x, 0.0, normal_z, light)
  if shape == 1:  # a cylinder of radius 0.8 s, height 2 s
    r = 0.8 * size
    x = np.clip(u / r, -1.0, 1.0)
    inside = (np.abs(u) <= r) & (v >= 0) & (v <= 2 * size)
    return inside, _shade(x, 0.0, np.sqrt(1.0 - x**2), light)
  if shape == 2:  # a sphere of radius s resting on the floor
    x, y = u / size, (v - size) / size
    inside = x**2 + y**2 <= 1.0
    return inside, _shade(x, y, np.sqrt(np.maximum(0.0, 1.0 - x**2 - y**2)), light)
  # a capsule: radius 0.55 s, height 2.4 s, a cylinder between two hemispheres
  r = 0.55 * size
  centre = np.clip(v, r, 2.4 * size - r)  # the nearest point of its axis
  x, y = u / r, (v - centre) / r
  inside = x**2 + y**2 <= 1.0
  return inside, _shade(x, y, np.sqrt(np.maximum(0.0, 1.0 - x**2 - y**2)), light)


def _render_chunk(factors: np.ndarray, resolution: int) -> np.ndarray:
  sub = resolution * _SUPERSAMPLE
  grid = ((np.arange(sub) + 0.5) / sub).astype(np.float32)
  px, py = grid[None, None, :], grid[None, :, None]  # x along width, y along height (down)
  per_image = lambda values: values[:, None, None]
  azimuth = per_image(ORIENTATIONS[factors[:, 5]].astype(np.float32))
  light = _camera_light(azimuth)
  # Background: the floor below the horizon; above it two walls meeting in a vertical corner.
  corner = 0.5 - _CORNER_SWING * np.sin(azimuth)
  wall_x = np.where(px < corner, np.sqrt(0.5), -np.sqrt(0.5))  # world normals, facing the room
  cos, sin = np.cos(azimuth), np.sin(azimuth)
  wall_shade = _shade(cos * wall_x - sin * np.sqrt(0.5), 0.0, sin * wall_x + cos * np.sqrt(0.5),
                      light)
  floor_shade = _AMBIENT + _DIFFUSE * _LIGHT[1]
  is_floor = py >= HORIZON
  shade = np.where(is_floor, np.float32(floor_shade), wall_shade)
  surface = np.where(is_floor, 0, 1).astype(np.int8)  # 0 floor, 1 wall, 2 object: whose hue
  surface = np.broadcast_to(surface, shade.shape).copy()
  size = per_image(_SIZE * SCALES[factors[:, 3]].astype(np.float32))
  # Objects are drawn in the box that holds the largest one (a capsule's height, a cube's
  # diagonal), a quarter of the picture.
  top, bottom = np.searchsorted(grid, [BASE - 2.5 * _SIZE * SCALES[-1], BASE], side="right")
  left, right = np.searchsorted(grid, [0.5 - 1.1 * _SIZE * SCALES[-1], 0.5 + 1.1 * _SIZE * SCALES[-1]])
  box = (slice(None), slice(top, bottom), slice(left, right))
  u, v = px[..., left:right] - 0.5, BASE - py[:, top:bottom]
  # `factors` come sorted by shape (see `render`), so each shape's images are one slice.
  bounds = np.searchsorted(factors[:, 4], np.arange(FACTOR_SIZES[4] + 1))
  for shape in range(FACTOR_SIZES[4]):
    rows = slice(bounds[shape], bounds[shape + 1])
    if rows.start == rows.stop:
      continue
    inside, object_shade = _object(shape, u, v, size[rows], azimuth[rows],
                                   tuple(c[rows] for c in light))
    np.copyto(shade[box][rows], object_shade, where=inside)
    surface[box][rows][inside] = 2
  colours = hue_rgb(HUES[factors[:, :3]]).astype(np.float32)[:, :, None, None, :]
  pixels = np.where((surface == 2)[..., None], colours[:, 2],
                    np.where((surface == 1)[..., None], colours[:, 1], colours[:, 0]))
  pixels *= shade[..., None]
  pixels = pixels.reshape(len(factors), resolution, _SUPERSAMPLE, resolution, _SUPERSAMPLE, 3)
  return pixels.mean(axis=(2, 4))


def render(factors: np.ndarray, resolution: int) -> np.ndarray:
  """uint8 images [n, R, R, 3] of the scenes described by `factors` [n, 6]."""
  factors = np.asarray(factors)
  if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
    raise ValueError(f"scenes.render needs factor indices [n, {len(FACTOR_SIZES)}] "
                     f"({', '.join(FACTOR_NAMES)}); got shape {factors.shape}")
  if np.any(factors < 0) or np.any(factors >= np.asarray(FACTOR_SIZES)):
    raise ValueError(f"scenes.render: factor indices must lie in [0, {FACTOR_SIZES}) per column")
  out = np.empty((len(factors), resolution, resolution, 3), np.uint8)
  for start in range(0, len(factors), _CHUNK):
    chunk = factors[start:start + _CHUNK]
    order = np.argsort(chunk[:, 4], kind="stable")
    out[start + order] = np.round(_render_chunk(chunk[order], resolution) * 255).astype(np.uint8)
  return out
