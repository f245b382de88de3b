r"""The quickstart: ML-VAE on scikit-learn's 8x8 digits, grouped by digit; offline, ~30 s.

  python launch.py --config=experiments/digits.py --workdir=/tmp/mlvae_digits

ends with (docs/digits/report.md): the digit from one image's content 0.947 (style 0.331);
pooling 1 -> 16 images raises group identification from 0.827 to 0.929. A 2 x 2 sweep:

  python launch.py --config=experiments/digits.py:smoke --workdir=/tmp/digits_sweep \
      --mode=sweep --sweep_parallel=2

Args (comma-separated after ':'): a preset (`default`), `smoke` (seconds),
`variant=mlvae|gvae|vae` (baselines), `likelihood=bernoulli|gaussian`.
"""

from experiments import common
from mlvae_jax import config_helpers, configs

BASE = {
    "data.name": "digits",
    "data.batch_size": 64,  # the validation split (144 images) must fill one batch
    "data.num_groups": 8,
    "data.group_policy": "fixed",
    "data.group_size": 8,
    "model.family": "mlp",
}

PRESETS = {
    # docs/digits/report.md: the quickstart's measured run.
    "default": {"model.hidden": 256, "model.content_dim": 8, "model.style_dim": 8},
}


def get_config(arg=None):
  args = common.parse_arg(arg, PRESETS, smoke=False, variant="mlvae", likelihood="bernoulli")
  config = common.build_config(BASE, PRESETS[args.preset])
  config.model.likelihood = args.likelihood
  common.set_schedule(config, 20000, log_every=200, eval_every=5000)
  config.evals.accumulation = configs.evaluator("accumulation")
  config.evals.images = configs.evaluator("images")
  config.evals.figures = configs.evaluator("figures")
  common.apply_common(config, args)
  return config


def get_sweep(arg=None):
  del arg  # the same points for the full and the smoke config
  return config_helpers.product({"objective.variant": ["mlvae", "vae"], "seed": [0, 1]})
