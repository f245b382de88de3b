r"""The quickstart: ML-VAE on scikit-learn's 8x8 digits, grouped by digit; offline, ~2 min.

  python launch.py --config=experiments/digits.py --workdir=/tmp/mlvae_digits

Args (comma-separated after ':'): `smoke` (seconds), `variant=mlvae|gvae|vae` (baselines),
`likelihood=bernoulli|gaussian`. Sweep (2 x 2, see get_sweep):

  python launch.py --config=experiments/digits.py:smoke --workdir=/tmp/digits_sweep \
      --mode=sweep --sweep_parallel=2
"""

from experiments import common
from mlvae_jax import config_helpers, configs


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, variant="mlvae", likelihood="bernoulli")
  config = configs.base_config()
  config.data.name = "digits"
  config.data.batch_size = 64  # the validation split (144 images) must fill one batch
  config.data.num_groups = 8
  config.data.group_policy = "fixed"
  config.data.group_size = 8
  config.model.family = "mlp"
  config.model.hidden = 256
  config.model.content_dim = 8
  config.model.style_dim = 8
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
