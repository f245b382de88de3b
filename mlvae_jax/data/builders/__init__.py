"""TFDS builders of the datasets that ship with mlvae_jax (TensorFlow-free, array_record).

They live in one package so TFDS can find their checksums, and carry an `mlvae_` prefix so
they never clash with TFDS's own `mnist` in a shared data directory.
"""

from mlvae_jax.data.builders.digits import Digits
from mlvae_jax.data.builders.grouped_shapes import GroupedShapes, GroupedShapesConfig
from mlvae_jax.data.builders.mnist import Mnist

__all__ = ["Digits", "GroupedShapes", "GroupedShapesConfig", "Mnist"]
