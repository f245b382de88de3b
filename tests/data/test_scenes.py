"""grouped_scenes: the renderer's factors, known pixels of known scenes, and the dataset through
the project's data path (TFDS builder, numpy cache, splits)."""

import colorsys
import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mlvae_jax import data
from mlvae_jax.data import builders, scenes
from tests.data.test_data_builders import data_root, make_config  # noqa: F401 - fixture

MIDDLE = [3, 6, 0, 4, 0, 7]  # red object (hue 0) on a teal floor before a blue-violet wall


def _tuples(**columns):
  """Factor rows: MIDDLE with the given columns set (lists broadcast against each other)."""
  names = list(columns)
  grids = np.meshgrid(*[np.asarray(columns[n]) for n in names], indexing="ij")
  rows = np.tile(np.asarray(MIDDLE, np.int32), (grids[0].size, 1))
  for name, grid in zip(names, grids):
    rows[:, scenes.FACTOR_NAMES.index(name)] = grid.ravel()
  return rows


def _chroma(pixels):
  """rgb / max channel: a surface's hue, whatever its shade."""
  pixels = np.asarray(pixels, np.float64)
  return pixels / pixels.max(axis=-1, keepdims=True)


def _reference_rgb(hue_index):
  return np.array(colorsys.hsv_to_rgb(hue_index / 10.0, 1.0, 1.0))


def test_factor_values_round_trip():
  rng = np.random.default_rng(0)
  factors = np.concatenate([scenes.sample_factors(rng, 5000),
                            np.zeros((1, 6), np.int32), np.asarray(scenes.FACTOR_SIZES)[None] - 1])
  values = scenes.factor_values(factors)
  np.testing.assert_array_equal(scenes.factor_indices(values), factors)
  np.testing.assert_allclose(values[:, 5].min() if len(values) else 0, np.deg2rad(-30.0))
  # Hues are read round the wheel: just below a full turn is hue 0.
  wrapped = values[:1].copy()
  wrapped[0, :3] = 0.999
  np.testing.assert_array_equal(scenes.factor_indices(wrapped)[0, :3], [0, 0, 0])


def test_hue_rgb_is_hsv():
  hues = np.arange(10) / 10.0
  expected = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
  np.testing.assert_allclose(scenes.hue_rgb(hues), expected, atol=1e-12)


def test_sampling_reaches_every_level():
  factors = scenes.sample_factors(np.random.default_rng(1), 4000)
  for j, size in enumerate(scenes.FACTOR_SIZES):
    assert set(factors[:, j]) == set(range(size)), scenes.FACTOR_NAMES[j]


@pytest.mark.parametrize("name", scenes.FACTOR_NAMES)
def test_every_level_of_every_factor_draws_a_different_image(name):
  images = scenes.render(_tuples(**{name: np.arange(scenes.FACTOR_SIZES[scenes.FACTOR_NAMES.index(name)])}), 32)
  flat = images.reshape(len(images), -1).astype(np.int32)
  gaps = np.abs(flat[:, None] - flat[None]).max(axis=2)
  assert np.all(gaps[~np.eye(len(images), dtype=bool)] > 10)


def test_rendering_is_deterministic_and_independent_of_the_batch():
  factors = scenes.sample_factors(np.random.default_rng(2), 300)  # > one render chunk
  once = scenes.render(factors, 32)
  np.testing.assert_array_equal(once, scenes.render(factors, 32))
  alone = np.concatenate([scenes.render(factors[i:i + 1], 32) for i in (0, 150, 299)])
  np.testing.assert_array_equal(alone, once[[0, 150, 299]])


@pytest.mark.parametrize("resolution", [32, 64])
def test_floor_and_walls_take_their_hues(resolution):
  factors = _tuples(floor_hue=np.arange(10), wall_hue=[0, 4, 7], orientation=[0, 7, 14])
  images = scenes.render(factors, resolution)
  floor = images[:, -1, 0]  # bottom-left: floor, whatever the object
  for wall in (images[:, 0, 0], images[:, 0, -1]):  # the top corners: the two walls
    np.testing.assert_allclose(_chroma(wall), [_reference_rgb(h) for h in factors[:, 1]],
                               atol=3 / 255 / 0.45)
  np.testing.assert_allclose(_chroma(floor), [_reference_rgb(h) for h in factors[:, 0]],
                             atol=3 / 255 / 0.45)
  # The floor's shade is one for every scene; the two walls are shaded apart.
  assert np.ptp(floor.max(axis=1)) <= 1
  assert np.all(np.abs(images[:, 0, 0].max(axis=1).astype(int)
                       - images[:, 0, -1].max(axis=1).astype(int)) > 5)


def test_the_walls_corner_moves_with_the_camera():
  images = scenes.render(_tuples(orientation=np.arange(15)), 64).astype(np.int32)
  top = images[:, 1, :, :].sum(axis=2)  # one wall row
  corner = np.argmax(np.abs(np.diff(top, axis=1)), axis=1)
  assert np.all(np.diff(corner) < 0)  # the camera turns right, the corner slides left


def _object_pixels(images, factors):
  """Pixels whose chroma is the object's hue (floor and wall hues differ from it here)."""
  target = np.stack([_reference_rgb(h) for h in factors[:, 2]])[:, None, None]
  return (np.abs(_chroma(images) - target).max(axis=-1) < 0.05).sum(axis=(1, 2))


def test_object_pixel_count_grows_with_scale_for_every_shape():
  factors = _tuples(shape=np.arange(4), scale=np.arange(8))
  count = _object_pixels(scenes.render(factors, 64), factors).reshape(4, 8)
  assert np.all(np.diff(count, axis=1) > 0)
  ratio = count[:, -1] / count[:, 0]
  np.testing.assert_array_less(2.0, ratio)  # area goes with the square of the size: (5/3)^2
  np.testing.assert_array_less(ratio, 3.5)


def test_the_object_itself_shows_the_orientation_for_every_shape():
  """Turning the camera changes the object's own pixels (its lit side, a cube's faces), not
  only the walls' corner: the orientation is visible in the object of every shape."""
  factors = _tuples(shape=np.arange(4), orientation=[0, 14])
  images = scenes.render(factors, 64).astype(np.int32).reshape(4, 2, 64, 64, 3)
  centre = images[:, :, 40:52, 28:36]  # inside every object at scale 4
  assert np.all(np.abs(centre[:, 0] - centre[:, 1]).max(axis=(1, 2, 3)) > 20)


# sha256 of the four renders below at 32x32, as this renderer first drew them (numpy on x86-64).
KNOWN_DIGEST = "762e703cac45a259109a5775ee7e1acdf4b746ba7bb9e92ae4e634c1475def69"


def test_known_renders_digest():
  """A few renders, byte for byte: any change of the renderer changes the dataset."""
  factors = np.array([[0, 5, 2, 0, 0, 0], [9, 1, 6, 7, 1, 14], [4, 4, 8, 3, 2, 7],
                      [2, 7, 0, 5, 3, 3]], np.int32)
  digest = hashlib.sha256(scenes.render(factors, 32).tobytes()).hexdigest()
  assert digest == KNOWN_DIGEST


def test_bad_factors_are_refused():
  with pytest.raises(ValueError, match=r"factor indices \[n, 6\]"):
    scenes.render(np.zeros((2, 5), np.int32), 32)
  with pytest.raises(ValueError, match="must lie in"):
    scenes.render(np.array([[0, 0, 0, 8, 0, 0]]), 32)


def test_builder_prepares_and_reads_back_through_the_data_path(data_root):  # noqa: F811
  assert tfds.builder_cls("mlvae_grouped_scenes") is builders.GroupedScenes
  config = make_config(data_root, name="grouped_scenes", resolution=32, num_examples=400,
                       group_by="shape,object_hue,scale", validation_fraction=0)
  assert data.observation_shape(config) == (32, 32, 3)
  split = data.load_split(config, "train")
  assert split.x.shape == (400, 32, 32, 3)
  assert split.factor_names == scenes.FACTOR_NAMES
  np.testing.assert_array_equal(np.round(split.x * 255).astype(np.uint8),
                                scenes.render(split.factors, 32))
  names = np.asarray(split.group_names)[split.labels]
  np.testing.assert_array_equal(names, [f"{s}:{h}:{c}" for s, h, c in split.factors[:, [4, 2, 3]]])
  batch = next(data.make_batch_iterator(
      make_config(data_root, name="grouped_scenes", resolution=32, num_examples=400,
                  group_by="shape", batch_size=16, num_groups=4,
                  group_policy="fixed", group_size=4), "train", seed=0))
  assert batch["x"].shape == (16, 32, 32, 3)
