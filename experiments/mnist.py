r"""The paper's MNIST setup (Bouchacourt et al. 2018, section 5): groups of one digit class.

MLP encoder and decoder with 500 tanh units, 10-d content and 10-d style, Adam at 1e-3,
batches of 256. The MNIST IDX files must be in data.manual_dir (see README, 'Data').

  python launch.py --config=experiments/mnist.py --workdir=/tmp/mnist \
      --config.data.manual_dir=/path/to/mnist
  python launch.py --config=experiments/mnist.py:likelihood=gaussian --workdir=/tmp/mnist_gauss

Args: `smoke`, `likelihood=bernoulli|gaussian` (the decoder), `variant=mlvae|gvae|vae`.
"""

from experiments import common
from mlvae_jax import config_helpers, configs


def get_config(arg=None):
  args = common.parse_arg(arg, smoke=False, variant="mlvae", likelihood="bernoulli")
  config = configs.base_config()
  config.data.name = "mnist"
  config.data.batch_size = 256
  config.data.num_groups = 32
  config.data.group_policy = "fixed"
  config.data.group_size = 8
  config.model.family = "mlp"
  config.model.hidden = 500
  config.model.activation = "tanh"
  config.model.content_dim = 10
  config.model.style_dim = 10
  config.model.likelihood = args.likelihood
  config.optim.learning_rate = 1e-3
  common.set_schedule(config, 20000, log_every=100, eval_every=2000)
  config.evals.accumulation = configs.evaluator("accumulation")
  config.evals.images = configs.evaluator("images")
  config.evals.figures = configs.evaluator("figures")
  common.apply_common(config, args)
  return config


def get_sweep(arg=None):
  """ML-VAE against its baselines, for the decoder the config arg picks (docs/mnist/)."""
  del arg
  return config_helpers.product({"objective.variant": ["mlvae", "gvae", "vae"]})
