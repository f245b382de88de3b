"""Pictures of what a trained ML-VAE has learnt, as image arrays [H, W, C] in [0, 1].

- `prior_grid`: decodes draws from the priors; row r shares a content draw, column c a style
  draw, so a row should look like one group in several styles.
- `traversal_grid`: one observation's posterior means with one dimension at a time swept
  over `values`; the content dimensions' rows come first, then the style dimensions'.
- `interpolation_grid`: the pooled content of two groups (strategy 2, the product of their
  members' posteriors), mixed linearly from the first to the second, decoded with the style
  of a few observations (one per row).
- `curve_plot`: identification accuracy and pooled content variance against the number k of
  pooled observations, one line per curve (`accumulation_plot` draws an `accumulation`
  evaluator's metrics).

The plot uses matplotlib (Agg canvas, no pyplot state): axes with ticks and labels are what
make a curve readable, and drawing text with numpy alone would mean shipping a font.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple, Sequence

from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.images import upscale
from mlvae_jax.evaluation.png import tile, write_png
from mlvae_jax.models import MLVAE


def prior_grid(model: MLVAE, params: dict, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
  """[rows, cols, H, W, C]: content draw r decoded with style draw c."""
  content = rng.standard_normal((rows, 1, model.encoder.content_dim), dtype=np.float32)
  style = rng.standard_normal((1, cols, model.encoder.style_dim), dtype=np.float32)
  return inference.decode(model, params, content, style)


def traversal_grid(model: MLVAE, params: dict, x: np.ndarray, values: Sequence[float]) -> np.ndarray:
  """[content_dim + style_dim, len(values), H, W, C] sweeps of observation `x` [H, W, C]."""
  posterior = inference.encode(model, params, x)
  code = np.concatenate([posterior.content_mu, posterior.style_mu])
  content_dim, dims = posterior.content_mu.shape[0], code.shape[0]
  codes = np.tile(code, (dims, len(values), 1))
  codes[np.arange(dims), :, np.arange(dims)] = np.asarray(values, np.float32)
  return inference.decode(model, params, codes[..., :content_dim], codes[..., content_dim:])


def interpolation_grid(model: MLVAE, params: dict, first: np.ndarray, second: np.ndarray,
                       style_x: np.ndarray, steps: int) -> np.ndarray:
  """[len(style_x), steps, H, W, C]: pooled content of group `first` [m, ...] turning into
  that of `second` [m', ...] from left to right, in the style of each row's `style_x`."""
  ids = np.repeat([0, 1], [len(first), len(second)])
  pooled = inference.content_strategy2(model, params, np.concatenate([first, second]), ids, 2).mu
  weight = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
  content = (1.0 - weight) * pooled[0] + weight * pooled[1]  # [steps, content_dim]
  style = inference.encode(model, params, style_x).style_mu
  return inference.decode(model, params, content[None], style[:, None])


class Curve(NamedTuple):
  """A measured curve against k: accuracy and mean pooled content log-variance per k."""

  k: np.ndarray
  accuracy: np.ndarray
  content_logvar: np.ndarray


def curve_plot(curves: Mapping[str, Curve], chance: float | None = None, title: str = "") -> np.ndarray:
  """RGB [H, W, 3] of accuracy (left) and pooled content variance (right, log scale) against k."""
  if not curves:
    raise ValueError("curve_plot needs at least one curve")
  figure = Figure(figsize=(8.0, 3.2), dpi=100)
  canvas = FigureCanvasAgg(figure)
  accuracy_axes, variance_axes = figure.subplots(1, 2)
  for label, curve in curves.items():
    accuracy_axes.plot(curve.k, curve.accuracy, marker="o", label=label)
    variance_axes.plot(curve.k, np.exp(curve.content_logvar), marker="o", label=label)
  if chance is not None:
    accuracy_axes.axhline(chance, color="grey", linestyle="--", label="chance")
  measured = sorted({int(k) for curve in curves.values() for k in curve.k})
  ticks = [k for k in measured if k & (k - 1) == 0 or k == measured[-1]]  # powers of 2, last
  for axes in (accuracy_axes, variance_axes):
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, [str(k) for k in ticks])
    axes.set_xlabel("k (observations pooled per group)")
    axes.grid(alpha=0.3)
  accuracy_axes.set_ylim(0.0, 1.02)
  accuracy_axes.set_ylabel("identification accuracy")
  accuracy_axes.legend(fontsize="small")
  variance_axes.set_yscale("log")
  variance_axes.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
  variance_axes.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
  variance_axes.yaxis.set_minor_formatter(ticker.NullFormatter())
  variance_axes.set_ylabel("pooled content variance\n(geometric mean over dims)")
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].astype(np.float32) / 255.0


def accumulation_plot(metrics: Mapping[str, float], label: str) -> np.ndarray:
  """`curve_plot` of the accuracy_k<k> and content_logvar_k<k> of an accumulation evaluator."""
  ks = sorted(int(m.group(1)) for key in metrics if (m := re.fullmatch(r"accuracy_k(\d+)", key)))
  curve = Curve(np.array(ks), np.array([metrics[f"accuracy_k{k}"] for k in ks]),
                np.array([metrics[f"content_logvar_k{k}"] for k in ks]))
  title = f"{label}: {int(metrics['num_groups'])} groups identified by pooled content"
  return curve_plot({label: curve}, chance=metrics["chance"], title=title)


@register("figures")
class Figures(Evaluator):
  """Writes prior.png (grid x grid), traversals.png (one random observation of `split`) and
  interpolation.png (two random groups of `split`, up to `pool_size` members each)."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    self.data = ctx.split(settings.split, settings.max_examples)
    if len(np.unique(self.data.labels)) < 2:
      raise ValueError(f"evaluator type 'figures' needs two groups in split {settings.split!r} "
                       "to interpolate between; it has one")

  def run(self, params: Any) -> dict[str, float]:
    s, x, labels, model = self.settings, self.data.x, self.data.labels, self.ctx.model
    rng = np.random.default_rng(self.ctx.config.seed)
    groups = [rng.permutation(np.flatnonzero(labels == v))[:s.pool_size]
              for v in rng.choice(np.unique(labels), 2, replace=False)]
    values = np.linspace(-s.traversal_limit, s.traversal_limit, s.traversal_steps)
    grids = {
        "prior": prior_grid(model, params, s.grid, s.grid, rng),
        "traversals": traversal_grid(model, params, x[rng.integers(len(x))], values),
        "interpolation": interpolation_grid(
            model, params, x[groups[0]], x[groups[1]],
            x[rng.choice(len(x), s.interpolation_rows, replace=False)], s.interpolation_steps),
    }
    for name, grid in grids.items():
      write_png(self.ctx.output_dir / f"{name}.png", tile(upscale(grid, s.min_pixels)))
    return {}
