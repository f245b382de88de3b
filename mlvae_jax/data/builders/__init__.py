"""TFDS builders of the datasets that ship with mlvae_jax (TensorFlow-free, array_record).

Importing this package registers `mlvae_digits`, `mlvae_mnist`, `mlvae_grouped_shapes`,
`mlvae_grouped_scenes` and `mlvae_lfw` with TFDS, so `tfds.builder(name)`, `tfds.data_source(name)` and `tfds build`
find them. The `mlvae_` prefix keeps them apart from TFDS's own datasets (its `mnist`, its
`lfw`) in a shared data directory. They live in one package so TFDS finds their checksums.
`python -m mlvae_jax.data.builders` is `tfds build` without TensorFlow (see `__main__.py`).
"""

from mlvae_jax.data.builders.digits import Digits
from mlvae_jax.data.builders.grouped_scenes import GroupedScenes
from mlvae_jax.data.builders.grouped_shapes import GroupedShapes, GroupedShapesConfig
from mlvae_jax.data.builders.lfw import Lfw
from mlvae_jax.data.builders.mnist import Mnist

__all__ = ["Digits", "GroupedScenes", "GroupedShapes", "GroupedShapesConfig", "Lfw", "Mnist"]
