"""The datasets on real data: digits, MNIST (when present), grouped_shapes, the TFDS adapter,
and the checks on raw files (IDX format, checksums, manual directory)."""

import gzip
import os
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mlvae_jax import configs
from mlvae_jax import data
from mlvae_jax.data import idx, shapes, sources
from mlvae_jax.data.builders import mnist as mnist_builder

# The four MNIST IDX files: $MLVAE_MNIST_DIR, else ../shared/data/mnist next to the checkout.
MNIST_DIR_VARIABLE = "MLVAE_MNIST_DIR"
MNIST_DIR = pathlib.Path(os.environ.get(MNIST_DIR_VARIABLE)
                         or pathlib.Path(__file__).resolve().parents[3] / "shared/data/mnist")
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def _why_no_mnist() -> str:
  """The skip reason CI prints (pytest -ra), or '' when the MNIST files are there."""
  try:
    mnist_builder.locate_manual_files(MNIST_DIR)
  except data.DataError as e:
    return (f"MNIST test skipped: {str(e).split(';')[0]}; set {MNIST_DIR_VARIABLE} to the "
            "directory holding the four IDX files")
  return ""


needs_mnist = pytest.mark.skipif(bool(_why_no_mnist()), reason=_why_no_mnist())


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  """One prepared-data cache per test session (same path in every data test module)."""
  return tmp_path_factory.getbasetemp() / "mlvae_tfds"


def make_config(root, **overrides):
  config = configs.base_config().data
  config.data_dir = str(root)
  config.update(overrides)
  return config


def test_digits_matches_scikit_learn(data_root):
  from sklearn.datasets import load_digits

  config = make_config(data_root, name="digits", validation_fraction=0.1)
  split = {name: data.load_split(config, name) for name in ("train", "validation", "test")}
  assert sum(len(s.labels) for s in split.values()) == 1797
  assert len(split["test"].labels) == 360
  assert split["test"].x.shape[1:] == (8, 8, 1) == data.observation_shape(config)
  assert split["test"].x.dtype == np.float32 and 0.0 <= split["train"].x.min()
  assert split["train"].x.max() == 1.0
  assert split["train"].group_names == tuple(str(d) for d in range(10))
  assert split["train"].factors is None
  reference = load_digits()
  np.testing.assert_array_equal(split["test"].x[..., 0] * 16, reference.images[::5])
  np.testing.assert_array_equal(split["test"].labels, reference.target[::5])


@needs_mnist
def test_mnist_from_manual_directory(data_root):
  config = make_config(data_root, name="mnist", manual_dir=str(MNIST_DIR), validation_fraction=0.0)
  train, test = data.load_split(config, "train"), data.load_split(config, "test")
  assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
  assert np.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
  images = idx.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", expected_shape=(10000, 28, 28))
  np.testing.assert_array_equal(test.x[..., 0] * 255, images)
  validation = data.load_split(make_config(data_root, name="mnist", validation_fraction=0.1),
                               "validation")
  assert len(validation.labels) == 6000  # the prepared data no longer needs manual_dir


def _factor_images(data_root, resolution, num_examples):
  config = make_config(data_root, name="grouped_shapes", resolution=resolution,
                       num_examples=num_examples, group_by="shape,scale", validation_fraction=0)
  return data.load_split(config, "train")


@pytest.mark.parametrize("resolution", [32, 64])
def test_grouped_shapes_pixels_follow_factors(data_root, resolution):
  split = _factor_images(data_root, resolution, 600 if resolution == 64 else 3000)
  assert split.x.shape[1:] == (resolution, resolution, 1)
  assert split.factor_names == shapes.FACTOR_NAMES
  factors, images = split.factors, split.x[..., 0]
  mass = images.sum(axis=(1, 2))
  grid_y, grid_x = np.mgrid[:resolution, :resolution]
  centre_x = (images * grid_x).sum(axis=(1, 2)) / mass
  centre_y = (images * grid_y).sum(axis=(1, 2)) / mass
  expected = shapes.POSITIONS * resolution - 0.5  # pixel coordinates of the centre
  symmetric = factors[:, 0] < 2  # squares and ellipses; a heart's centroid sits off-centre
  for centre, column in ((centre_x, 3), (centre_y, 4)):
    error = centre - expected[factors[:, column]]
    assert np.abs(error[symmetric]).max() < 0.6
    assert np.corrcoef(centre[~symmetric], factors[~symmetric, column])[0, 1] > 0.98
  np.testing.assert_allclose(images.max(axis=(1, 2)), shapes.BRIGHTNESSES[factors[:, 5]], atol=0.01)
  # Area grows with the square of the scale, for every shape.
  area = (images > 0.5 * images.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2))
  for shape in range(3):
    small = area[(factors[:, 0] == shape) & (factors[:, 1] == 0)].mean()
    large = area[(factors[:, 0] == shape) & (factors[:, 1] == 5)].mean()
    assert 3.0 < large / small < 5.0
  # Group labels code the (shape, scale) pair.
  names = np.asarray(split.group_names)[split.labels]
  np.testing.assert_array_equal(names, [f"{s}:{c}" for s, c in factors[:, :2]])


def test_rotation_labels_are_taken_modulo_each_shapes_symmetry(data_root):
  """Renders a symmetry apart are the same image and get one label; renders a smaller turn
  apart differ; every shape has the same 10 phase levels; the evaluation split carries them."""
  factors = np.array([[shape, 5, rotation, 16, 16, 3] for shape in range(3)
                      for rotation in range(40)], np.int32)
  images = shapes.render(factors, 32).astype(np.int32).reshape(3, 40, -1)
  labels = shapes.identifiable_factors(factors)
  np.testing.assert_array_equal(np.delete(labels, 2, axis=1), np.delete(factors, 2, axis=1))
  for shape, period in enumerate((10, 20, 40)):
    rows = labels[factors[:, 0] == shape, 2]
    np.testing.assert_array_equal(rows, np.arange(40) % period * 10 // period)
    for a in range(40):
      for b in range(a + 1, 40):
        gap = np.abs(images[shape, a] - images[shape, b]).max()
        if (b - a) % period == 0:
          assert gap <= 1, (shape, a, b)  # the same image, up to uint8 rounding
          assert rows[a] == rows[b]
        else:
          assert gap > 10, (shape, a, b)
        if rows[a] != rows[b]:
          assert gap > 10
  config = make_config(data_root, name="grouped_shapes", resolution=32, num_examples=3000,
                       group_by="shape,scale", validation_fraction=0)
  split, stored = data.load_split(config, "train"), sources.load_examples(config)
  raw = stored.factors(np.arange(len(stored.images)))
  assert np.max(raw[raw[:, 0] == 0, 2]) >= 10  # squares are rendered at every rotation
  for shape in range(3):
    assert set(split.factors[split.factors[:, 0] == shape, 2]) == set(range(10))


def test_grouped_shapes_is_reproducible(data_root, tmp_path):
  first = _factor_images(data_root, 32, 3000)
  again = _factor_images(tmp_path, 32, 3000)  # generated afresh elsewhere
  np.testing.assert_array_equal(first.factors, again.factors)
  np.testing.assert_array_equal(first.x, again.x)


def test_grouped_shapes_default_config_builds(tmp_path):
  """The predefined config (the shapes experiment's defaults) is named, not redefined."""
  config = configs.base_config().data
  config.update(name="grouped_shapes", data_dir=str(tmp_path))
  builder = sources._spec(config).builder
  assert builder.builder_config.num_examples == config.num_examples == 20000


class MlvaeToyAdapter(tfds.core.GeneratorBasedBuilder):
  """A registered TFDS dataset standing in for dsprites & co: nested labels, binary pixels,
  a float field, and 'train' and 'validation' but no 'test' split."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "pixels": tfds.features.Tensor(shape=(4, 4), dtype=np.uint8),
        "attributes": {"colour": tfds.features.Tensor(shape=(), dtype=np.int64),
                       "size": tfds.features.Tensor(shape=(), dtype=np.int64)},
        "weight": tfds.features.Tensor(shape=(), dtype=np.float32),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(200), "validation": self._generate_examples(50)}

  def _generate_examples(self, num):
    for i in range(num):
      yield i, {"pixels": np.eye(4, dtype=np.uint8) * (i % 2), "weight": i / 7,
                "attributes": {"colour": i % 3, "size": i % 5}}


@pytest.fixture(scope="session")
def toy_adapter(data_root):
  tfds.builder("mlvae_toy_adapter", data_dir=str(data_root),
               file_format="array_record").download_and_prepare()
  return data_root


def test_generic_tfds_adapter(toy_adapter):
  data_root = toy_adapter
  config = make_config(data_root, name="tfds", tfds_name="mlvae_toy_adapter",
                       image_key="pixels", group_by="attributes/colour",
                       validation_fraction=0.2, batch_size=12, num_groups=3, group_size=4)
  assert data.observation_shape(config) == (4, 4, 1)
  splits = {name: data.load_split(config, name) for name in ("train", "validation", "test")}
  # TFDS validation is used as is; test, which the dataset lacks, is carved from train.
  assert [len(s.labels) for s in splits.values()] == [160, 50, 40]
  assert splits["train"].factor_names == ("attributes/colour", "attributes/size")
  assert splits["train"].x.max() == 1.0  # binary pixels are not divided by 255
  batch = next(data.make_batch_iterator(config, "train", seed=0))
  assert batch["x"].shape == (12, 4, 4, 1) and batch["mask"].all()


def test_generic_adapter_errors(toy_adapter):
  data_root = toy_adapter
  config = make_config(data_root, name="tfds", tfds_name="mlvae_toy_adapter", image_key="picture")
  with pytest.raises(data.DataError, match="no image feature 'picture'.*'pixels'"):
    data.load_split(config, "train")
  assert not list((data_root / "mlvae_numpy").rglob(".tmp-*"))  # no half-written cache left
  with pytest.raises(data.DataError, match="no usable dataset 'no_such_dataset'"):
    data.load_split(make_config(data_root, name="tfds", tfds_name="no_such_dataset"), "train")
  with pytest.raises(data.DataError, match="is not prepared.*tfds build mnist"):
    data.load_split(make_config(data_root, name="tfds", tfds_name="mnist"), "train")
  with pytest.raises(data.DataError, match="needs data.tfds_name"):
    data.load_split(make_config(data_root, name="tfds"), "train")


def _write_idx(path, shape, payload=None, magic=None):
  header = bytes([0, 0, 8, len(shape)]) + np.asarray(shape, ">u4").tobytes()
  body = np.zeros(int(np.prod(shape)), np.uint8).tobytes() if payload is None else payload
  content = (magic or header[:4]) + header[4:] + body
  if path.suffix == ".gz":
    with gzip.open(path, "wb") as f:
      f.write(content)
  else:
    path.write_bytes(content)
  return path


def test_idx_reader_checks_magic_size_and_checksum(tmp_path):
  good = _write_idx(tmp_path / "good.gz", (3, 2, 2))
  assert idx.read_idx(good, expected_shape=(3, 2, 2)).shape == (3, 2, 2)
  with pytest.raises(data.DataError, match="wrong magic number 0000ff03"):
    idx.read_idx(_write_idx(tmp_path / "magic", (3, 2, 2), magic=b"\0\0\xff\3"),
                 expected_shape=(3, 2, 2))
  with pytest.raises(data.DataError, match="wrong magic number"):
    idx.read_idx(_write_idx(tmp_path / "html", (1,), magic=b"<htm"), expected_shape=(1,))
  with pytest.raises(data.DataError, match="has 22 bytes, expected 28.*truncated"):
    idx.read_idx(_write_idx(tmp_path / "short", (3, 2, 2), payload=b"\0" * 6),
                 expected_shape=(3, 2, 2))
  with pytest.raises(data.DataError, match=r"shape \(3, 2, 2\), expected \(4, 2, 2\)"):
    idx.read_idx(good, expected_shape=(4, 2, 2))
  with pytest.raises(data.DataError, match="checksum mismatch for .*good.gz"):
    idx.read_idx(good, expected_shape=(3, 2, 2), sha256="0" * 64)


def _mnist_config(tmp_path, manual_dir):
  return make_config(tmp_path / "tfds", name="mnist", manual_dir=str(manual_dir))


def test_mnist_missing_directory_and_file(tmp_path):
  with pytest.raises(data.DataError, match="manual directory .*nowhere does not exist.*"
                     "train-images-idx3-ubyte.gz, train-labels"):
    data.load_split(_mnist_config(tmp_path, tmp_path / "nowhere"), "train")
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_idx(manual / "train-images-idx3-ubyte", (60000, 28, 28))
  with pytest.raises(data.DataError, match=f"train-labels-idx1-ubyte.gz .*missing from {manual}"):
    data.load_split(_mnist_config(tmp_path, manual), "train")


def test_mnist_download_failure_points_to_manual_directory():
  class Offline:
    def download(self, urls):
      raise OSError("Network is unreachable")

  with pytest.raises(data.DataError, match="could not download MNIST.*Network is unreachable.*"
                     "t10k-labels-idx1-ubyte.gz.*set data.manual_dir"):
    mnist_builder.download_files(Offline())


def test_mnist_checksum_mismatch_names_the_file(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  for name, (shape, _) in mnist_builder.FILES.items():
    _write_idx(manual / name, shape)  # right format and size, wrong content
  with pytest.raises(data.DataError, match="checksum mismatch for .*train-images-idx3-ubyte"):
    data.load_split(_mnist_config(tmp_path, manual), "train")
