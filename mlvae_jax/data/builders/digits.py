"""scikit-learn's bundled 8x8 handwritten digits: the offline dataset of the quickstart."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from mlvae_jax.data.builders.labelled_images import LabelledImages

_TEST_EVERY = 5  # every 5th example is a test example (360 of 1797), a fixed split


class Digits(LabelledImages):
  """1797 images of 8x8 pixels with values 0..16; label = the digit."""

  name = "mlvae_digits"
  VERSION = tfds.core.Version("1.0.0")
  IMAGE_SHAPE = (8, 8, 1)
  HOMEPAGE = "https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset"

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    is_test = np.arange(len(images)) % _TEST_EVERY == 0
    return {
        "train": self._generate_examples(images[~is_test], digits.target[~is_test]),
        "test": self._generate_examples(images[is_test], digits.target[is_test]),
    }
