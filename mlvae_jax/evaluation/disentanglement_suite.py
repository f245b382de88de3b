"""`disentanglement_suite`: the standard suite (`disentanglement_metrics`) of the posterior
means, on the full code and on the content and style codes alone, against every
ground-truth factor of the dataset.

Metrics are '<score>/<code>' with code full, content or style: mig, sap, dci_disentanglement,
dci_completeness, dci_informativeness, modularity, explicitness, factor_vae and beta_vae (the
last two: accuracy on their evaluation batches). MIG, SAP, DCI, modularity and explicitness
use the codes of `split`; the FactorVAE and BetaVAE batches are rendered for grouped_shapes
and drawn from the examples of `split` for other datasets with factors.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from mlvae_jax import inference
from mlvae_jax.evaluation import disentanglement_metrics as metrics_lib
from mlvae_jax.evaluation import factor_sampling
from mlvae_jax.evaluation.base import Evaluator, register
from mlvae_jax.evaluation.context import EvalContext


@register("disentanglement_suite")
class DisentanglementSuite(Evaluator):
  """The suite on `max_examples` codes of `split` and on freshly drawn fixed-factor batches."""

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    super().__init__(ctx, settings)
    self.data = ctx.split(settings.split, settings.max_examples)
    if self.data.factors is None:
      raise ValueError(
          f"evaluator type 'disentanglement_suite' needs ground-truth factors, which dataset "
          f"'{ctx.config.data.name}' lacks; use it with grouped_shapes or a TFDS dataset with factors"
      )
    if ctx.config.data.name == "grouped_shapes":
      self.sampler = factor_sampling.RenderedShapes(int(ctx.config.data.resolution))
    else:
      self.sampler = factor_sampling.StoredExamples(self.data.x, self.data.factors)

  def run(self, params: Any) -> dict[str, float]:
    s = self.settings
    posterior = self.ctx.codes(params, s.split, s.max_examples)
    codes = np.concatenate([posterior.content_mu, posterior.style_mu], axis=1)
    content_dim = posterior.content_mu.shape[1]
    subsets = {"full": np.arange(codes.shape[1]), "content": np.arange(content_dim),
               "style": np.arange(content_dim, codes.shape[1])}

    def represent(x: np.ndarray) -> np.ndarray:
      code = inference.encode(self.ctx.model, params, x)
      return np.concatenate([code.content_mu, code.style_mu], axis=1)

    rng = np.random.default_rng(self.ctx.config.seed)
    draw_fixed = lambda m: factor_sampling.fixed_factor_codes(
        self.sampler, represent, m, s.factor_vae_batch_size, rng)
    draw_pairs = lambda m: factor_sampling.paired_codes(
        self.sampler, represent, m, s.beta_vae_batch_size, rng)
    reference = factor_sampling.reference_codes(self.sampler, represent, s.factor_vae_variance_examples, rng)
    fixed_train, fixed_eval = draw_fixed(s.factor_vae_train), draw_fixed(s.factor_vae_eval)
    pairs_train, pairs_eval = draw_pairs(s.beta_vae_train), draw_pairs(s.beta_vae_eval)

    split_args = dict(train_fraction=s.train_fraction, seed=self.ctx.config.seed)
    factors, results = self.data.factors, {}
    for code_name, dims in subsets.items():
      code = codes[:, dims]
      scores = {
          "mig": metrics_lib.mig(code, factors, num_bins=s.num_bins),
          "sap": metrics_lib.sap(code, factors, **split_args),
          **{f"dci_{k}": v for k, v in
             metrics_lib.dci(code, factors, num_trees=s.dci_trees, **split_args).items()},
          **metrics_lib.modularity_explicitness(code, factors, num_bins=s.num_bins, **split_args),
          "factor_vae": metrics_lib.factor_vae_score(
              fixed_train.restrict(dims), fixed_eval.restrict(dims), reference[:, dims],
              prune_threshold=s.prune_threshold)["eval_accuracy"],
          "beta_vae": metrics_lib.beta_vae_score(
              pairs_train.restrict(dims), pairs_eval.restrict(dims),
              seed=self.ctx.config.seed)["eval_accuracy"],
      }
      results.update({f"{name}/{code_name}": value for name, value in scores.items()})
    return results
