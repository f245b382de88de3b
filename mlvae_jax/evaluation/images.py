"""Image grids a person looks at: reconstructions and content/style swaps.

The swap grid's first row shows the style sources and its first column the content sources;
cell (r, c) decodes content r with style c, so a row should keep its group (digit class,
shape) while columns vary the style (slant, thickness, position).
"""

from __future__ import annotations

import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.png import tile, write_png

GRID = 8
SCALE_TO = 48  # small images are enlarged (nearest neighbour) to at least this many pixels


def _upscale(images: np.ndarray) -> np.ndarray:
  factor = max(1, SCALE_TO // images.shape[-3])
  return images.repeat(factor, axis=-3).repeat(factor, axis=-2)


def _distinct_group_examples(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
  """Indices of `count` examples, one per group value while values last."""
  values = rng.permutation(np.unique(labels))
  picks = [rng.choice(np.nonzero(labels == v)[0]) for v in values[:count]]
  rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), picks))
  return np.concatenate([picks, rest[: count - len(picks)]]).astype(int)


def image_grids(ctx: EvalContext) -> dict[str, float]:
  split = ctx.split("test")
  rng = np.random.default_rng(ctx.config.seed)
  content_idx = _distinct_group_examples(split.labels, GRID, rng)
  style_idx = rng.choice(len(split.x), GRID, replace=False)
  grid = inference.swap(ctx.model, ctx.params, split.x[content_idx], split.x[style_idx])
  blank = np.ones_like(split.x[:1])
  top = np.concatenate([blank, split.x[style_idx]])[None]
  body = np.concatenate([split.x[content_idx][:, None], grid], axis=1)
  write_png(ctx.output_dir / "swap.png", tile(_upscale(np.concatenate([top, body]))))

  originals = split.x[rng.choice(len(split.x), 2 * GRID, replace=False)]
  recon = inference.reconstruct(ctx.model, ctx.params, originals)
  write_png(ctx.output_dir / "reconstructions.png", tile(_upscale(np.stack([originals, recon]))))
  return {"reconstruction_mse": float(np.mean((recon - originals) ** 2))}
