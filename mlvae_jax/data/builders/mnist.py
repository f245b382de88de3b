"""The real MNIST, from its four IDX files in a manual directory or downloaded by TFDS."""

from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from mlvae_jax.data import idx
from mlvae_jax.data.builders.array_record import given_manual_dir
from mlvae_jax.data.builders.labelled_images import LabelledImages
from mlvae_jax.data.errors import DataError

URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
# name -> (array shape, sha256 of the uncompressed bytes; gz and raw copies hash alike).
FILES = {
    "train-images-idx3-ubyte": (
        (60000, 28, 28), "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": (
        (60000,), "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": (
        (10000, 28, 28), "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": (
        (10000,), "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
_PUT_FILES = (
    "put the four MNIST IDX files, under their standard names, gzip-compressed or raw ("
    + ", ".join(f"{name}.gz" for name in FILES)
    + f"; from {URL} or http://yann.lecun.com/exdb/mnist/) in one directory"
)
INSTRUCTIONS = f"{_PUT_FILES} and set data.manual_dir to it"


def locate_manual_files(manual_dir: pathlib.Path) -> dict[str, pathlib.Path]:
  """Finds each standard file (`.gz` or raw) in `manual_dir`, or says which one is missing."""
  if not manual_dir.is_dir():
    raise DataError(f"MNIST manual directory {manual_dir} does not exist; {INSTRUCTIONS}")
  found = {}
  for name in FILES:
    candidates = [manual_dir / f"{name}.gz", manual_dir / name]
    present = [path for path in candidates if path.is_file()]
    if not present:
      raise DataError(
          f"MNIST file {name}.gz (or uncompressed {name}) is missing from {manual_dir}; "
          f"{INSTRUCTIONS}"
      )
    found[name] = present[0]
  return found


def download_files(dl_manager: tfds.download.DownloadManager) -> dict[str, pathlib.Path]:
  """Downloads the four files through TFDS, which checks them against checksums.tsv."""
  try:
    paths = dl_manager.download({name: f"{URL}{name}.gz" for name in FILES})
  except Exception as e:  # network errors come in many types; all mean the same to a user
    raise DataError(
        f"could not download MNIST from {URL} ({type(e).__name__}: {e}); when offline, "
        f"{INSTRUCTIONS}"
    ) from e
  return {name: pathlib.Path(path) for name, path in paths.items()}


class Mnist(LabelledImages):
  """60000 train and 10000 test images [28, 28, 1] uint8; label = the digit."""

  name = "mlvae_mnist"
  VERSION = tfds.core.Version("1.0.0")
  IMAGE_SHAPE = (28, 28, 1)
  HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"{_PUT_FILES} and pass it as --manual_dir (tfds build)"

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    """`manual_dir`: a directory with the IDX files; None takes TFDS's manual directory
    (`tfds build --manual_dir`) when it holds files, else downloads them."""
    super().__init__(**kwargs)
    self._idx_dir = pathlib.Path(manual_dir).expanduser() if manual_dir else None

  def _downloads(self) -> bool:
    return self._idx_dir is None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = self._idx_dir or given_manual_dir(dl_manager)
    if manual_dir is not None:
      paths = locate_manual_files(manual_dir)
    else:
      paths = download_files(dl_manager)
    arrays = {
        name: idx.read_idx(paths[name], expected_shape=shape, sha256=sha)
        for name, (shape, sha) in FILES.items()
    }
    return {
        split: self._generate_examples(
            arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        )
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }
