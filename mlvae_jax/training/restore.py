"""A checkpoint of a workdir placed on the mesh of a config: what eval mode and
`inference.load` start from (training resumes through `loop`, which also restores the data
iterator)."""

from __future__ import annotations

import os

import ml_collections

from mlvae_jax.training import checkpoint as checkpoint_lib
from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.training.setup import Setup, TrainState
from mlvae_jax.training.workdir import SetupError


def restore_state(
    config: ml_collections.ConfigDict, workdir: str, step: int | None = None
) -> tuple[TrainState, int, Setup]:
  """(state, step, setup) of a checkpoint of `workdir`, placed on config.mesh.

  `step` defaults to the best checkpoint by config.train.keep_best_metric, else the latest,
  or, if that cannot be read, the newest that can. The mesh may differ from the one the run
  was trained on (e.g. 1 device for an 8-device run). Non-finite parameters are refused.
  """
  workdir_lib.check_name(workdir)
  setup = setup_lib.setup(config)
  checkpoints = checkpoint_lib.Checkpoints(workdir, config.train, read_only=True)
  try:
    steps = checkpoints.steps()
    if not steps and not checkpoints.damaged:
      raise SetupError(f"workdir {workdir} holds no checkpoint; train there first")
    if not steps:
      raise checkpoints.none_intact()
    if step is not None and step not in steps and step not in checkpoints.damaged:
      raise SetupError(f"workdir {workdir} has no checkpoint at step {step}; it has {steps}")
    # restore() fails first on mismatched shapes, the most specific error.
    step, state, _ = checkpoints.restore_readable(
        setup.abstract_state, preferred=[checkpoints.best_step() if step is None else step],
        fallback=step is None, with_data=False,
    )
    diffs = workdir_lib.config_differences(config.to_dict(), checkpoints.saved_config(step))
    if diffs:  # e.g. evaluating without the run's overrides would read other splits
      raise SetupError(
          f"checkpoint {step} of {workdir} was trained with another config "
          f"({workdir_lib.summarise_differences(diffs)}); give the run's overrides "
          f"(its full config is {os.path.join(workdir, workdir_lib.CONFIG_FILE)})"
      )
  finally:
    checkpoints.close()
  return state, step, setup
