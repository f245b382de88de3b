"""The base of mlvae_jax's builders: TensorFlow-free by default, and quiet when offline.

TFDS writes tfrecord unless told otherwise, and tfrecord needs TensorFlow; these builders
default to array_record, so `tfds.builder("mlvae_digits").download_and_prepare()` and
`tfds.data_source("mlvae_digits")` work as they are. TFDS also announces "Downloading and
preparing dataset Unknown size..." and warns that a not-yet-prepared dataset "has no
dataset_info.json", which reads like a failed download on an offline machine; these builders
say so only when they do download.
"""

from __future__ import annotations

import pathlib
from typing import Any

from etils import epath
import tensorflow_datasets as tfds


def given_manual_dir(dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
  """The manual directory TFDS was given (`tfds build --manual_dir`, a `DownloadConfig`),
  or None when it was given none or an empty one (the builder needs
  MANUAL_DOWNLOAD_INSTRUCTIONS)."""
  try:
    return pathlib.Path(dl_manager.manual_dir)
  except AssertionError:  # TFDS's way of saying: no manual directory, or an empty one
    return None


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A generator-based builder stored as array_record unless `file_format` says otherwise."""

  def __init__(self, *, file_format: str | None = None, **kwargs: Any):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _downloads(self) -> bool:
    """Whether preparing fetches files from the network (overridden by builders that can)."""
    return False

  def is_prepared(self) -> bool:
    """TFDS's answer, without its warning about a directory not written yet."""
    return epath.Path(self.data_path).exists() and super().is_prepared()

  def _log_download_bytes(self) -> None:
    if self._downloads():
      super()._log_download_bytes()

  def _log_download_done(self) -> None:
    if self._downloads():
      super()._log_download_done()
