"""`style_transfer`: does a content/style swap take its style source's style?

The swap evaluator asks whether a swap keeps its content source's digit, which a decoder
that ignores style passes as well as one that uses it. This one measures style itself, with
three attributes of an image's ink (pixel intensity as mass), defined plainly:

- slant: the shear of the ink, the regression slope of column on row (second moments
  mu_rc / mu_rr): how far the ink moves sideways per row down;
- width: the ink's horizontal standard deviation left once the slant is removed,
  sqrt(mu_cc - mu_rc^2 / mu_rr), in pixels;
- thickness: twice the ink's mass over the length of its edges, 2 sum(x) / sum |grad x|:
  the width in pixels of a long stroke, unchanged by blurred edges (reconstructions are
  blurred) and smooth in the image (a binarised distance transform moves in whole pixels).

Each attribute is class-normalised (z-scored with the mean and standard deviation of real
images of that class, on this split), so a digit's own shape does not count as style. For
pairs (a, b) of different digits the swap decode(content of a, style of b) is scored by the
Pearson correlation of its attribute (normalised for a's class: it should show a's digit)
with b's; the ceiling is the same correlation for reconstructions against their inputs, and
`<attribute>/ratio` = swap / ceiling is the share of the attribute a swap carries over
(issue 26's goal: >= 0.80 for each). `<attribute>/content` correlates the swap with its
content source instead (a style attribute that follows content is in the wrong code).
Retrieval re-encodes each swap and asks which of `candidates` style sources (its own among
them) has the nearest style code: `retrieval` is the top-1 rate (chance 1 / candidates),
`retrieval_ceiling` the same for reconstructions and their own inputs.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation.swap import different_label_pairs
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext

ATTRIBUTES = ("slant", "width", "thickness")
DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (content, style) -> images
StyleFn = Callable[[np.ndarray], np.ndarray]  # images -> style codes


def _gray(images: np.ndarray) -> np.ndarray:
  """[n, H, W] intensities from [n, H, W] or [n, H, W, C] images (channels averaged)."""
  images = np.asarray(images, np.float64)
  if images.ndim == 4:
    images = images.mean(-1)
  if images.ndim != 3:
    raise ValueError(f"style_transfer needs images [n, H, W(, C)], got shape {images.shape}")
  return images


def slant_and_width(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per image: the shear mu_rc / mu_rr and the deslanted width sqrt(mu_cc - mu_rc^2 / mu_rr)
  of the ink's second moments (nan for an image without ink or with all ink on one row)."""
  x = _gray(images)
  rows, cols = np.meshgrid(np.arange(x.shape[1]), np.arange(x.shape[2]), indexing="ij")
  mass = x.sum((1, 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    r = (x * rows).sum((1, 2)) / mass
    c = (x * cols).sum((1, 2)) / mass
    dr = rows[None] - r[:, None, None]
    dc = cols[None] - c[:, None, None]
    mu_rr = (x * dr * dr).sum((1, 2)) / mass
    mu_rc = (x * dr * dc).sum((1, 2)) / mass
    mu_cc = (x * dc * dc).sum((1, 2)) / mass
    slant = np.where(mu_rr > 0, mu_rc / mu_rr, np.nan)
    width = np.sqrt(np.maximum(mu_cc - slant * mu_rc, 0.0))
  return slant, width


def thickness(images: np.ndarray) -> np.ndarray:
  """Per image: twice the ink's mass over its edge length, 2 sum(x) / sum |grad x| (forward
  differences on the image padded with one blank pixel all round), which is the width of a
  long stroke of full intensity and does not change when its edges are blurred (an edge's
  total variation is its height); nan for an image without ink."""
  x = np.pad(_gray(images), ((0, 0), (1, 1), (1, 1)))
  d_row = x[:, 1:, :-1] - x[:, :-1, :-1]
  d_col = x[:, :-1, 1:] - x[:, :-1, :-1]
  edge = np.sqrt(d_row * d_row + d_col * d_col).sum((1, 2))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(edge > 0, 2 * x.sum((1, 2)) / edge, np.nan)


def attributes(images: np.ndarray) -> np.ndarray:
  """[n, 3] slant, width and thickness of each image (ATTRIBUTES' order)."""
  slant, width = slant_and_width(images)
  return np.stack([slant, width, thickness(images)], axis=1)


def class_normalise(values: np.ndarray, labels: np.ndarray, reference: np.ndarray,
                    reference_labels: np.ndarray) -> np.ndarray:
  """`values` [n, A] z-scored per column with the mean and standard deviation of the rows
  of `reference` of the same class (nan where that class has no spread or no rows)."""
  out = np.full(values.shape, np.nan)
  for label in np.unique(labels):
    ref = reference[reference_labels == label]
    with np.errstate(invalid="ignore", divide="ignore"):
      mean, sd = np.nanmean(ref, 0), np.nanstd(ref, 0)
      out[labels == label] = (values[labels == label] - mean) / np.where(sd > 0, sd, np.nan)
  return out


def correlation(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation over the rows where both are finite; 0 when either is constant
  there (no co-variation to measure), nan with fewer than 3 such rows."""
  keep = np.isfinite(x) & np.isfinite(y)
  x, y = x[keep] - x[keep].mean(), y[keep] - y[keep].mean()
  if len(x) < 3:
    return float("nan")
  norm = np.sqrt((x * x).sum() * (y * y).sum())
  return float((x * y).sum() / norm) if norm > 0 else 0.0


def retrieval_rate(queries: np.ndarray, candidates: np.ndarray, block: int) -> float:
  """Top-1 rate at which query i's nearest (Euclidean) row of `candidates`, among the rows
  of its block of `block` consecutive pairs, is its own (or ties with it); rows that do not
  fill a block are left out."""
  blocks = len(queries) // block
  if blocks == 0:
    raise ValueError(f"retrieval needs at least {block} pairs (candidates); raise num_pairs")
  q = queries[:blocks * block].reshape(blocks, block, -1)
  c = candidates[:blocks * block].reshape(blocks, block, -1)
  distances = ((q[:, :, None] - c[:, None]) ** 2).sum(-1)
  own = distances[:, np.arange(block), np.arange(block)]
  return float(np.mean(own <= distances.min(-1)))  # a repeated source in a block is no miss


def transfer_scores(images: np.ndarray, labels: np.ndarray, content: np.ndarray,
                    style: np.ndarray, a: np.ndarray, b: np.ndarray, decode: DecodeFn,
                    encode_style: StyleFn, candidates: int) -> dict[str, float]:
  """The evaluator's metrics for real `images` with their codes (`content`, `style`: the
  encoder's means), pairs (a, b) of different classes, the model's `decode` and its
  `encode_style` (images -> style means)."""
  real = attributes(images)
  real_z = class_normalise(real, labels, real, labels)
  swaps = decode(content[a], style[b])
  swap_z = class_normalise(attributes(swaps), labels[a], real, labels)
  sources = np.unique(np.concatenate([a, b]))
  reconstructions = decode(content[sources], style[sources])
  recon_z = class_normalise(attributes(reconstructions), labels[sources], real,
                            labels)
  metrics: dict[str, float] = {}
  for j, name in enumerate(ATTRIBUTES):
    ceiling = correlation(recon_z[:, j], real_z[sources, j])
    metrics[f"{name}/style"] = correlation(swap_z[:, j], real_z[b, j])
    metrics[f"{name}/content"] = correlation(swap_z[:, j], real_z[a, j])
    metrics[f"{name}/ceiling"] = ceiling
    metrics[f"{name}/ratio"] = metrics[f"{name}/style"] / ceiling if ceiling > 0 else float("nan")
  metrics["ratio_min"] = min(metrics[f"{name}/ratio"] for name in ATTRIBUTES)
  source_rows = np.searchsorted(sources, b)
  metrics["retrieval"] = retrieval_rate(encode_style(swaps), style[b], candidates)
  metrics["retrieval_ceiling"] = retrieval_rate(encode_style(reconstructions[source_rows]),
                                                style[b], candidates)
  metrics["retrieval_chance"] = 1.0 / candidates
  return metrics


@register("style_transfer")
class StyleTransfer(Evaluator):
  """Per attribute: the swap's correlation with its style source and with its content
  source, the reconstruction ceiling and their ratio; `ratio_min`; re-encoding retrieval."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    if settings.candidates < 2 or settings.num_pairs < settings.candidates:
      raise ValueError(f"style_transfer candidates={settings.candidates} and num_pairs="
                       f"{settings.num_pairs}: set candidates >= 2 and num_pairs >= candidates")
    self.data = ctx.split(settings.split, settings.max_examples)
    if self.data.x.ndim not in (3, 4):
      raise ValueError(f"style_transfer measures image attributes; observations of shape "
                       f"{self.data.x.shape[1:]} are not images [H, W(, C)]")

  def run(self, params: Any) -> dict[str, float]:
    s = self.settings
    model = self.ctx.model
    codes = self.ctx.codes(params, s.split, s.max_examples)
    a, b = different_label_pairs(self.data.labels, s.num_pairs,
                                                  np.random.default_rng(self.ctx.config.seed))
    return transfer_scores(
        self.data.x, self.data.labels, np.asarray(codes.content_mu), np.asarray(codes.style_mu),
        a, b, lambda c, st: inference.decode(model, params, c, st),
        lambda x: np.asarray(inference.encode(model, params, x).style_mu),
        s.candidates)
