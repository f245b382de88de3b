"""Evaluators, declared in the config as `config.evals.<name>` (the big_vision contract).

    config.evals.val = configs.evaluator("elbo", split="validation", every=500)
    config.evals.unseen_curve = configs.evaluator("accumulation", split="unseen", repeats=10)

Each entry has a `type` (an evaluator class registered under that name), the `split` it
measures, `every` (a step count; 0 = only at the end of the run) and the type's own
settings, all in config.json. During training `Evaluators` is the loop's hook: each
evaluator runs at its cadence (metrics '<name>/<metric>' go to metrics.jsonl and
TensorBoard; an evaluator that draws puts its pictures in WORKDIR/eval/pictures/step_<N>/ and
TensorBoard), keep-best's evaluator at every checkpoint, and all of them at the end, when
WORKDIR/eval/ gets metrics.json, report.md and the pictures. `--mode=eval` runs the same
evaluators on a restored checkpoint.

Adding an evaluator type takes one small class and one line of settings:

    # mlvae_jax/evaluation/my_metric.py
    @register("my_metric")
    class MyMetric(Evaluator):
      def __init__(self, ctx, settings):      # read data here, so bad settings fail early
        super().__init__(ctx, settings)
        self.data = ctx.split(settings.split, settings.max_examples)

      def run(self, params):                  # host (numpy) params; process 0 only
        codes = self.ctx.codes(params, self.settings.split, self.settings.max_examples)
        return {"value": float(...)}

    # mlvae_jax/configs.py, EVALUATOR_SETTINGS:
    "my_metric": {"max_examples": 5000},

then import the module below so it registers. `ctx` (`EvalContext`) gives the config, the
run's setup (model, mesh, loss), `split(name, max_examples)` read once per run,
`codes(params, split, max_examples)` encoded once per parameters (shared by every
evaluator reading the same split) and `output_dir` for pictures. A type that shards
batches over the mesh sets `on_mesh = True` and receives the train state's parameters on
every process (see elbo.py).
"""

from __future__ import annotations

from mlvae_jax.evaluation import (  # noqa: F401 - importing a protocol registers its type
    accumulation, baseline, classify, disentanglement, disentanglement_suite, elbo, figures,
    images, style_transfer, swap,
)
from mlvae_jax.evaluation.base import EVALUATORS, Evaluator, register
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.disentanglement_metrics import dci, mig, sap
from mlvae_jax.evaluation.report import headline, headline_metrics
from mlvae_jax.evaluation.suite import EVAL_DIR, Evaluators, check_entry

__all__ = ["EVALUATORS", "EVAL_DIR", "EvalContext", "Evaluator", "Evaluators", "check_entry",
           "dci", "headline", "headline_metrics", "mig", "register", "sap"]
