r"""Conv ML-VAE on grouped_scenes (procedural 3D-Shapes-like scenes), grouped by (shape,
object hue, scale).

Members of a group share the object (its shape, hue and size) and differ in floor hue, wall
hue and camera azimuth; content should capture the object, style the rest. Nothing here is
read off the true factors: the codes are 6-d each and there is no moment pose (the floor and
walls fill the picture, so moments would not find it). The `baseline` evaluator prints what
codes computed without learning (PCA of group means / of residuals) score on the same probes.

  python launch.py --config=experiments/scenes.py --workdir=/tmp/scenes

Not yet run to the end (docs/scenes.md): a 32x32 CPU run of 600 steps is recorded there.

Args: a preset (`default`, `paper`), `smoke`, `resolution=32|64`,
`variant=mlvae|gvae|vae|ada_gvae|ada_mlvae`, `likelihood=bernoulli|gaussian` (default: the
preset's).
"""

from experiments import common
from mlvae_jax import config_helpers, configs

BASE = {
    **common.FACTOR_CONV,
    "data.name": "grouped_scenes",
    "data.num_examples": 50000,
    "data.group_by": "shape,object_hue,scale",
    "model.style_dim": 6,
    "optim.learning_rate": 5e-4,
}

PRESETS = {
    # The MNIST study's terms (docs/mnist/study.md): the style-group HSIC and single-member
    # content; a Bernoulli decoder as disentanglement_lib uses on 3D Shapes.
    "default": {
        "objective.style_hsic_weight": 1e5, "objective.single_member_rate": 0.5,
        "model.likelihood": "bernoulli", "train.num_steps": 20000,
    },
    # The paper's model and objective.
    "paper": {"model.likelihood": "bernoulli", "train.num_steps": 20000},
}


def get_config(arg=None):
  config, args = common.factor_config(arg, BASE, PRESETS, baseline_kind="group_pca")
  common.add_pictures(config, figures=False)
  config.evals.suite = configs.evaluator("disentanglement_suite")
  common.apply_common(config, args)
  if args.smoke:
    config.data.num_examples = 4096
    config.data.group_by = "shape,scale"  # validation then has >= 2 members of each group
    config.data.batch_size = 32
    config.data.num_groups = 8
  return config


def get_sweep(arg=None):
  del arg
  return config_helpers.product({"objective.variant": ["mlvae", "gvae", "vae"]})
