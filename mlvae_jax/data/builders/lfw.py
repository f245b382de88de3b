"""Labeled Faces in the Wild at 64x64, labelled by person: the faces experiment's data.

TFDS's own `lfw` stores the 250x250 JPEGs and needs TensorFlow to prepare; this builder reads
the same archive and stores each photo's central 128x128 pixels (the face and a little
around it) averaged down to 64x64, the size of the conv model, as `tfds.features.Tensor`, so
it prepares and reads without TensorFlow. JPEGs are decoded with Pillow.
"""

from __future__ import annotations

import io
import pathlib
import tarfile
import zlib
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from mlvae_jax.data.builders.array_record import ArrayRecordBuilder, given_manual_dir
from mlvae_jax.data.errors import DataError

URL = "https://ndownloader.figshare.com/files/5976018"  # the copy TFDS and scikit-learn use
ARCHIVE = "lfw.tgz"
IMAGE_SHAPE = (64, 64, 3)
_CROP = 128  # central pixels kept of the 250x250 photos; 2x2 averaging halves them


def face(photo: np.ndarray) -> np.ndarray:
  """[64, 64, 3] uint8: the central 128x128 pixels of an LFW photo, each 2x2 block averaged."""
  top, left = (photo.shape[0] - _CROP) // 2, (photo.shape[1] - _CROP) // 2
  crop = photo[top:top + _CROP, left:left + _CROP].astype(np.float32)
  blocks = crop.reshape(_CROP // 2, 2, _CROP // 2, 2, 3).mean(axis=(1, 3))
  return np.round(blocks).astype(np.uint8)


def _decode_jpeg(data: bytes) -> np.ndarray:
  try:
    from PIL import Image  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(
        "mlvae_lfw decodes the LFW JPEGs with Pillow: pip install 'mlvae_jax[faces]'") from e
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


class Lfw(ArrayRecordBuilder):
  """13233 faces [64, 64, 3] uint8 of 5749 people; `label` = the person's name, e.g.
  'George_W_Bush' (as in TFDS's `lfw`). One split, `train`, in archive order."""

  name = "mlvae_lfw"
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"put {ARCHIVE} (from {URL}) in a directory and pass it as --manual_dir (tfds build)"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        homepage="http://vis-www.cs.umass.edu/lfw",
    )

  def _downloads(self) -> bool:
    return True  # 180 MB, unless --manual_dir holds the archive (known only once preparing)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = given_manual_dir(dl_manager)
    if manual_dir is not None:
      archive = manual_dir / ARCHIVE
      if not archive.is_file():
        raise DataError(f"{archive} is missing; {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    else:
      archive = pathlib.Path(dl_manager.download(URL))
    return {"train": self._generate_examples(archive)}

  def _generate_examples(self, archive: pathlib.Path) -> Iterator:
    where = "its start"
    try:
      with tarfile.open(archive) as tar:
        for member in tar:  # in archive order: a gzip stream is read once, front to back
          if member.isfile() and member.name.endswith(".jpg"):
            where = member.name
            person = pathlib.PurePosixPath(member.name).parent.name
            photo = _decode_jpeg(tar.extractfile(member).read())
            yield member.name, {"image": face(photo), "label": person}
    # A truncated or corrupted download: bad gzip or tar data, or an undecodable JPEG (OSError).
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
      raise DataError(f"cannot read {archive} (at {where}): {e}; download it again") from e
