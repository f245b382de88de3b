"""Procedural dSprites-like shapes with every ground-truth factor stored per example."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mlvae_jax.data import shapes
from mlvae_jax.data.builders.array_record import ArrayRecordBuilder


@dataclasses.dataclass(eq=False)
class GroupedShapesConfig(tfds.core.BuilderConfig):
  """Resolution, train-set size and generation seed; the test split is a quarter as large."""

  resolution: int = 32
  num_examples: int = 20000
  generation_seed: int = 0

  @classmethod
  def create(cls, resolution: int, num_examples: int, generation_seed: int):
    return cls(
        name=f"r{resolution}_n{num_examples}_s{generation_seed}",
        resolution=resolution,
        num_examples=num_examples,
        generation_seed=generation_seed,
    )


class GroupedShapes(ArrayRecordBuilder):
  """Images [R, R, C] uint8 plus one int field per factor of the renderer's FACTOR_NAMES
  (a subclass names another renderer: grouped_scenes.py)."""

  name = "mlvae_grouped_shapes"
  renderer = shapes  # a module with FACTOR_NAMES, sample_factors(rng, n), render(factors, R)
  channels = 1
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [GroupedShapesConfig.create(32, 20000, 0)]

  def _info(self) -> tfds.core.DatasetInfo:
    res = self.builder_config.resolution
    features = {"image": tfds.features.Tensor(shape=(res, res, self.channels), dtype=np.uint8)}
    features.update(
        {name: tfds.features.Tensor(shape=(), dtype=np.int64)
         for name in self.renderer.FACTOR_NAMES}
    )
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features), disable_shuffling=True
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    sizes = {"train": cfg.num_examples, "test": max(1, cfg.num_examples // 4)}
    return {
        split: self._generate_examples(np.random.default_rng([cfg.generation_seed, i]), size)
        for i, (split, size) in enumerate(sizes.items())
    }

  def _generate_examples(self, rng: np.random.Generator, num: int):
    factors = self.renderer.sample_factors(rng, num)
    images = self.renderer.render(factors, self.builder_config.resolution)
    for i in range(num):
      example = dict(zip(self.renderer.FACTOR_NAMES, factors[i].tolist()))
      yield i, {"image": images[i], **example}
