"""`images`: grids a person looks at, written as PNG into eval/: reconstructions and
content/style swaps.

The swap grid's first row shows the style sources and its first column the content sources;
cell (r, c) decodes content r with style c, so a row should keep its group (digit class,
shape) while columns vary the style (slant, thickness, position).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.png import tile, write_png


def upscale(images: np.ndarray, min_pixels: int) -> np.ndarray:
  """Enlarges (nearest neighbour) so an image is at least `min_pixels` high."""
  factor = max(1, min_pixels // images.shape[-3])
  return images.repeat(factor, axis=-3).repeat(factor, axis=-2)


def distinct_group_examples(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of `count` examples, one per group value while values last."""
  values = rng.permutation(np.unique(labels))
  picks = [rng.choice(np.nonzero(labels == v)[0]) for v in values[:count]]
  rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), picks))
  return np.concatenate([picks, rest[: count - len(picks)]]).astype(int)


@register("images")
class ImageGrids(Evaluator):
  """Writes swap.png (grid x grid swaps with their sources) and reconstructions.png (2 grid
  originals over their reconstructions); reports reconstruction_mse of the latter."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    self.data = ctx.split(settings.split, settings.max_examples)

  def run(self, params: Any) -> dict[str, float]:
    s, x, model = self.settings, self.data.x, self.ctx.model
    rng = np.random.default_rng(self.ctx.config.seed)
    content_idx = distinct_group_examples(self.data.labels, s.grid, rng)
    style_idx = rng.choice(len(x), s.grid, replace=False)
    grid = inference.swap(model, params, x[content_idx], x[style_idx])
    top = np.concatenate([np.ones_like(x[:1]), x[style_idx]])[None]
    body = np.concatenate([x[content_idx][:, None], grid], axis=1)
    out = self.ctx.output_dir
    write_png(out / "swap.png", tile(upscale(np.concatenate([top, body]), s.min_pixels)))

    originals = x[rng.choice(len(x), 2 * s.grid, replace=False)]
    recon = inference.reconstruct(model, params, originals)
    write_png(out / "reconstructions.png",
              tile(upscale(np.stack([originals, recon]), s.min_pixels)))
    return {"reconstruction_mse": float(np.mean((recon - originals) ** 2))}
