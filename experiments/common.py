"""What every experiment file shares: its arg string and the switches every experiment has.

An experiment arg is a comma-separated list, `smoke,variant=vae,likelihood=gaussian`: a bare
name sets a boolean to True, `key=value` sets any other; values take the type of the
default. Unknown names fail with the valid ones.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from mlvae_jax.configs import VARIANTS, evaluator


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """The experiment's arg string as a ConfigDict with the keys (and types) of `defaults`."""
  args = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, has_value, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown experiment arg {key!r}; valid: {', '.join(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      args[key] = value.lower() in ("", "1", "true", "yes") if has_value else True
    else:
      args[key] = kind(value)
  return args


def set_schedule(config: ml_collections.ConfigDict, num_steps: int, log_every: int,
                 eval_every: int) -> None:
  """Run length and cadence: validate (evals.val) and checkpoint together, keeping the best
  checkpoint by the validation ELBO."""
  config.train.num_steps = num_steps
  config.train.log_every = log_every
  config.evals.val.every = eval_every
  config.train.checkpoint_every = eval_every
  config.train.keep_best_metric = "val/elbo"


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
      "test": evaluator("elbo", split="test", max_batches=1),
  })
