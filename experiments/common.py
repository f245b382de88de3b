"""What every experiment file shares: its arg string, its presets and the switches every
experiment has.

An experiment arg is a comma-separated list, `smoke,variant=vae,likelihood=gaussian`: a bare
name sets a boolean to True, `key=value` sets any other; values take the type of the
default. A bare preset name (`paper`) picks that preset, as `preset=paper` does. Unknown names
fail with the valid ones.

A preset is a flat dictionary {dotted config key: value} applied on top of the experiment's
`BASE` (another flat dictionary): a preset never sets a key `BASE` sets, so every setting is
written once.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from mlvae_jax.config_helpers import set_path
from mlvae_jax.configs import VARIANTS, base_config, evaluator

Overrides = Mapping[str, Any]


# What the factor-dataset experiments share (shapes, scenes): groups of 2-16 drawn uniformly,
# 16 group slots in a batch of 128, and disentanglement_lib's conv encoder/decoder.
FACTOR_CONV: Overrides = {
    "data.batch_size": 128,
    "data.num_groups": 16,
    "data.group_policy": "uniform",
    "data.group_size_min": 2,
    "data.group_size_max": 16,
    "model.family": "conv",
    "model.hidden": 256,  # disentanglement_lib's conv encoder/decoder
    "model.activation": "relu",
    "model.content_dim": 6,
}


def parse_arg(arg: str | None, presets: Mapping[str, Overrides] | None = None,
              **defaults: Any) -> ml_collections.ConfigDict:
  """The experiment's arg string as a ConfigDict with the keys (and types) of `defaults`,
  plus `preset` (the first of `presets` unless the arg names another) when `presets` is given."""
  presets = presets or {}
  if presets:
    defaults = {"preset": next(iter(presets)), **defaults}
  args = ml_collections.ConfigDict(defaults)
  named = []
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    if key in presets and not has_value:
      key, value, has_value = "preset", key, True
    if key not in defaults:
      raise ValueError(f"unknown experiment arg {key!r}; valid: {', '.join(defaults)}"
                       + (f", or a preset: {', '.join(presets)}" if presets else ""))
    kind = type(defaults[key])
    if kind is bool:
      args[key] = value.lower() in ("", "1", "true", "yes") if has_value else True
    else:
      args[key] = kind(value)
    named += [args[key]] if key == "preset" else []
  if presets and (len(named) > 1 or args.preset not in presets):
    raise ValueError(f"experiment arg names the presets {named}; pick one of {', '.join(presets)}")
  return args


def build_config(base: Overrides, preset: Overrides) -> ml_collections.ConfigDict:
  """configs.base_config() with `base`, then `preset`, set key by key (dotted keys)."""
  shared = sorted(set(base) & set(preset))
  if shared:
    raise ValueError(f"the preset sets {shared}, which the experiment's BASE sets already; "
                     "set each key in one of them")
  config = base_config()
  for key, value in {**base, **preset}.items():
    try:
      set_path(config, key, value)
    except KeyError:
      raise ValueError(f"preset key {key!r} is not a config key; see mlvae_jax/configs.py") from None
  return config


def set_schedule(config: ml_collections.ConfigDict, num_steps: int, log_every: int,
                 eval_every: int) -> None:
  """Run length and cadence: validate (evals.val) and checkpoint together, keeping the best
  checkpoint by the validation ELBO."""
  config.train.num_steps = num_steps
  config.train.log_every = log_every
  config.evals.val.every = eval_every
  config.train.checkpoint_every = eval_every
  config.train.keep_best_metric = "val/elbo"


def factor_config(arg: str | None, base: Overrides, presets: Mapping[str, Overrides],
                  baseline_kind: str) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """The start every factor-dataset experiment shares: its preset at `resolution=`, an optional
  `likelihood=`, the schedule, and the factor evaluators with the parameter-free baseline of
  `baseline_kind` beside them (issue 27: what no learning reads, on the same probes)."""
  args = parse_arg(arg, presets, smoke=False, variant="mlvae", likelihood="", resolution=32)
  config = build_config(base, presets[args.preset])
  config.data.resolution = args.resolution
  if args.likelihood:
    config.model.likelihood = args.likelihood
  set_schedule(config, config.train.num_steps, log_every=100, eval_every=2000)
  config.evals.accumulation = evaluator("accumulation")
  config.evals.disentanglement = evaluator("disentanglement")
  config.evals.disentanglement_knn = evaluator("disentanglement", probe="knn")
  config.evals.baseline = evaluator("baseline", kind=baseline_kind)
  config.evals.baseline_knn = evaluator("baseline", kind=baseline_kind, probe="knn")
  return config, args


def add_pictures(config: ml_collections.ConfigDict, figures: bool = True) -> None:
  """The picture evaluators (`images`; `figures` too unless told not to), drawn at every
  validation so TensorBoard shows them while training (issue 30); set their `every` to 0
  (e.g. --config.evals.figures.every=0) to draw them at the end only."""
  every = config.evals.val.every
  config.evals.images = evaluator("images", every=every)
  if figures:
    config.evals.figures = evaluator("figures", every=every)


def apply_common(config: ml_collections.ConfigDict, args: ml_collections.ConfigDict) -> None:
  """The switches of every experiment: the objective variant (baselines) and `smoke`.

  `smoke` keeps the experiment's data and model family but shrinks everything else so a run
  trains, checkpoints and evaluates in seconds (tests, sweeps of the framework itself).
  """
  if args.variant not in VARIANTS:
    raise ValueError(f"variant={args.variant!r} is unknown; use one of {VARIANTS}")
  config.objective.variant = args.variant
  if not args.smoke:
    return
  config.model.hidden = 32
  config.model.content_dim = 4
  config.model.style_dim = 4
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.checkpoint_every = 2
  config.evals = ml_collections.ConfigDict({
      "val": evaluator("elbo", split="validation", every=4, max_batches=1),
      "test": evaluator("elbo", max_batches=1),  # on evals_split, like the base config's
  })
