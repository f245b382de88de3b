"""`baseline`: content and style codes computed without learning, scored like the model.

A model's factor gains mean little alone: on grouped_shapes a parameter-free code (the moment
pose and peak intensity as style, a PCA of the pose-normalised image as content) reads the
factors about as well as the shipped model (issue 27). This evaluator computes such codes
from the pixels and the fit split's groups only, never from the run's parameters, and scores
them with `disentanglement.factor_gains`, the very probes and bins the `disentanglement`
evaluator uses, so report.md shows what the model adds beside what it scores.

Two kinds (`settings.kind`):
- `group_pca` (any dataset, e.g. grouped_scenes' RGB): the closed-form linear split of
  between-group and within-group variation. Content is the image projected on the top
  `content_dim` principal directions of the fit split's group means (each image replaced by
  its group's mean); style is the image projected on the top `style_dim` directions of the
  residuals from the group mean. Only the groups of the fit split are used, as a weakly
  supervised model uses them; a test image is coded alone.
- `moments` (one object on a dark background: grouped_shapes): style is the moment pose of
  `mlvae_jax/pose/canonical.py` (centroid, cos / sin of k times the angle for each harmonic k
  of `model.canonical_harmonics`, angle by `model.canonical_angle`) and the peak intensity;
  content the top `content_dim` principal components of the image brought to its canonical
  frame (the model's `pose_from=moments` input).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from sklearn.decomposition import PCA

from mlvae_jax.evaluation.base import register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.disentanglement import FactorDisentanglement, factor_gains

KINDS = ("group_pca", "moments")
_ROWS_PER_CALL = 1024  # images brought to their canonical frame per JAX call


def _flat(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float64).reshape(len(x), -1)


def _principal_directions(rows: np.ndarray, dim: int, seed: int) -> np.ndarray:
  """[D, dim'] orthonormal top principal directions of `rows` [n, D] (dim' = min(dim, n, D));
  randomised SVD (seeded, so repeatable): a full SVD of 5000 RGB images takes minutes here."""
  dim = min(dim, *rows.shape)
  solver = "randomized" if dim < min(rows.shape) else "full"
  return PCA(dim, svd_solver=solver, random_state=seed).fit(rows).components_.T


def group_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[n, D] each row of `x` [n, D] replaced by the mean of the rows sharing its label."""
  values, codes = np.unique(labels, return_inverse=True)
  sums = np.zeros((len(values), x.shape[1]))
  np.add.at(sums, codes, x)
  return (sums / np.bincount(codes)[:, None])[codes]


def group_pca_codes(fit_x: np.ndarray, fit_labels: np.ndarray, test_x: np.ndarray,
                    content_dim: int, style_dim: int, seed: int = 0
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'content' | 'style': (fit codes, test codes)}: projections on the principal directions
  of the fit split's group means (content) and of its residuals from them (style)."""
  fit, test = _flat(fit_x), _flat(test_x)
  centre = fit.mean(axis=0)
  means = group_means(fit, fit_labels)
  content = _principal_directions(means - centre, content_dim, seed)
  style = _principal_directions(fit - means, style_dim, seed)
  project = lambda basis: ((fit - centre) @ basis, (test - centre) @ basis)
  return {"content": project(content), "style": project(style)}


def moment_features(images: np.ndarray, harmonics: tuple[int, ...], rule: str
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(style [n, 3 + 2K]: centroid, cos / sin of k times the moment angle, peak intensity;
  canonical frames [n, H W C]) of images [n, H, W, C]."""
  # Imported here: JAX is only needed by this kind.
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from mlvae_jax.pose import canonical  # pylint: disable=import-outside-toplevel

  styles, frames = [], []
  for start in range(0, len(images), _ROWS_PER_CALL):
    chunk = jnp.asarray(images[start:start + _ROWS_PER_CALL], jnp.float32)
    angle, centre = canonical.canonical_pose(chunk, harmonics, rule)
    turns = jnp.asarray(harmonics, jnp.float32)[None, :] * angle[:, None]
    peak = chunk.reshape(len(chunk), -1).max(axis=1, keepdims=True)
    styles.append(np.asarray(jnp.concatenate(
        [centre, jnp.cos(turns), jnp.sin(turns), peak], axis=1), np.float64))
    frames.append(_flat(np.asarray(canonical.to_canonical_frame(chunk, angle, centre))))
  return np.concatenate(styles), np.concatenate(frames)


def moment_codes(fit_x: np.ndarray, test_x: np.ndarray, content_dim: int,
                 harmonics: tuple[int, ...], rule: str, seed: int = 0
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{'content' | 'style': (fit codes, test codes)} of the moment baseline (module docstring)."""
  fit_style, fit_frames = moment_features(fit_x, harmonics, rule)
  test_style, test_frames = moment_features(test_x, harmonics, rule)
  centre = fit_frames.mean(axis=0)
  basis = _principal_directions(fit_frames - centre, content_dim, seed)
  return {"content": ((fit_frames - centre) @ basis, (test_frames - centre) @ basis),
          "style": (fit_style, test_style)}


@register("baseline")
class ParameterFreeBaseline(FactorDisentanglement):
  """`factor_gains` of the baseline's codes (module docstring); the same at every step,
  whatever the parameters, so it is computed once."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    if settings.kind not in KINDS:
      raise ValueError(f"config.evals.<baseline>.kind={settings.kind!r} is unknown; use one "
                       f"of {KINDS}")
    self._metrics: dict[str, float] | None = None

  def codes(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'content' | 'style': (fit codes, test codes)} of the configured kind."""
    s, seed = self.settings, int(self.ctx.config.seed)
    if s.kind == "group_pca":
      return group_pca_codes(self.fit.x, self.fit.labels, self.test.x, s.content_dim,
                             s.style_dim, seed)
    # Imported here: pose needs JAX, and only this kind needs the pose.
    from mlvae_jax.pose import canonical  # pylint: disable=import-outside-toplevel

    model = self.ctx.config.model
    harmonics = canonical.parse_harmonics(model.canonical_harmonics)
    return moment_codes(self.fit.x, self.test.x, s.content_dim, harmonics,
                        model.canonical_angle, seed)

  def run(self, params: Any) -> dict[str, float]:
    del params  # the baseline learns nothing: its codes never see the parameters
    if self._metrics is None:
      s = self.settings
      self._metrics = factor_gains(self.codes(), self.fit.factors, self.test.factors,
                                   self.fit.factor_names, self.content_factors, s.bins, s.probe)
    return dict(self._metrics)
