"""The shared shape of the class-labelled image builders (digits, MNIST)."""

from __future__ import annotations

from typing import ClassVar, Iterator

import numpy as np
import tensorflow_datasets as tfds

from mlvae_jax.data.builders.array_record import ArrayRecordBuilder


class LabelledImages(ArrayRecordBuilder, skip_registration=True):
  """Images [H, W, 1] uint8 with an integer `label`, stored in order (no write shuffling)."""

  IMAGE_SHAPE: ClassVar[tuple[int, int, int]]
  HOMEPAGE: ClassVar[str]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self.IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        disable_shuffling=True,
        homepage=self.HOMEPAGE,
    )

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray) -> Iterator:
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image.reshape(self.IMAGE_SHAPE), "label": int(label)}
