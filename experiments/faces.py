r"""Faces grouped by identity (the paper's second experiment, on LFW instead of the withdrawn
MS-Celeb-1M): the conv model at 64x64, content = who, style = pose, light, expression.

The data come through the generic TFDS adapter (data.name='tfds'): `mlvae_lfw` (our builder,
LFW's central faces at 64x64, `label` = the person's name) by default, or any TFDS dataset
of 64x64 images with a per-person field (`tfds_name=`, with data.image_key / data.group_by).
Ten people with 44 to 60 photos each never appear in training; the `accumulation` evaluator
pools 1 to 16 of their photos into one content code and identifies the rest.

  python -m mlvae_jax.data.builders mlvae_lfw --data_dir=$HOME/.cache/mlvae_jax/tfds  # once
  python launch.py --config=experiments/faces.py --workdir=/tmp/faces

Not yet run to the end here: no headline to expect. Args: a preset (`default`), `smoke`,
`tfds_name=mlvae_lfw`, `variant=mlvae|gvae|vae`, `likelihood=bernoulli|gaussian`.
"""

from experiments import common
from mlvae_jax import config_helpers, configs

# Held out of training: the accumulation curve is measured on them. Each has more photos
# than the largest support set (16), so every k has queries left.
UNSEEN_PEOPLE = (
    "Junichiro_Koizumi", "Jean_Chretien", "John_Ashcroft", "Jacques_Chirac", "Serena_Williams",
    "Vladimir_Putin", "Luiz_Inacio_Lula_da_Silva", "Gloria_Macapagal_Arroyo",
    "Jennifer_Capriati", "Laura_Bush",
)

BASE = {
    "data.name": "tfds",
    "data.image_key": "image",
    "data.group_by": "label",
    "data.unseen_groups": ",".join(UNSEEN_PEOPLE),
    "data.batch_size": 128,
    "data.num_groups": 64,
    # Most people have one photo, a few have hundreds: groups of 1 to 8 photos of one person.
    "data.group_policy": "uniform",
    "data.group_size_min": 1,
    "data.group_size_max": 8,
    "model.family": "conv",
    "model.hidden": 256,  # disentanglement_lib's conv encoder/decoder
    "model.activation": "relu",
    "optim.learning_rate": 5e-4,
}

PRESETS = {
    # The paper's faces experiment (section 5) at disentanglement_lib's conv sizes; not yet
    # measured here (LFW needs a download).
    "default": {"model.content_dim": 16, "model.style_dim": 16},
}


def get_config(arg=None):
  args = common.parse_arg(
      arg, PRESETS, smoke=False, variant="mlvae", likelihood="bernoulli", tfds_name="mlvae_lfw"
  )
  config = common.build_config(BASE, PRESETS[args.preset])
  config.data.tfds_name = args.tfds_name
  config.model.likelihood = args.likelihood
  common.set_schedule(config, 30000, log_every=100, eval_every=3000)
  del config.evals.classify  # a linear probe over 5,700 identities, most with one photo
  common.add_pictures(config)
  common.apply_common(config, args)
  # Set after `smoke` trims the evaluators: the curve on unseen people is this experiment.
  config.evals.accumulation = configs.evaluator("accumulation", split="unseen")
  if args.smoke:
    config.data.batch_size = 32
    config.data.num_groups = 16
  return config


def get_sweep(arg=None):
  """ML-VAE against its baselines."""
  del arg
  return config_helpers.product({"objective.variant": ["mlvae", "gvae", "vae"]})
