"""Procedural 3D-Shapes-like scenes (`scenes.py`) with every ground-truth factor stored per
example: grouped_shapes' builder with the scene renderer and RGB images."""

from __future__ import annotations

import tensorflow_datasets as tfds

from mlvae_jax.data import scenes
from mlvae_jax.data.builders.grouped_shapes import GroupedShapes, GroupedShapesConfig


class GroupedScenes(GroupedShapes):
  """Images [R, R, 3] uint8 plus one int field per factor of `scenes.FACTOR_NAMES`."""

  name = "mlvae_grouped_scenes"
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [GroupedShapesConfig.create(32, 50000, 0)]
  renderer = scenes
  channels = 3
