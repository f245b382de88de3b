"""Training and evaluation of a config: `train_and_evaluate(config, workdir)` and
`evaluate(config, workdir)` (`--mode=eval`).

This module wires the pieces together: `training.setup.setup` (config checks, model, optimiser,
shardings), `evaluation.Evaluators` (config.evals, checked before anything is written),
`loop.train` (the step loop, with the evaluators as its hook) and `restore.restore_state`
(a checkpoint on a mesh). Both modes end the same way: the evaluators' metrics, a report in
WORKDIR/eval/ and a headline on the console.
"""

from __future__ import annotations

import json
import math
import os

import jax
import ml_collections

from mlvae_jax.training import checkpoint as checkpoint_lib
from mlvae_jax.training import device_memory
from mlvae_jax import evaluation
from mlvae_jax.training import loop
from mlvae_jax.training import metrics_writer
from mlvae_jax.training import run_lock
from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.training.restore import restore_state
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.training.setup import Setup
from mlvae_jax.training.workdir import SetupError

EVAL_WHILE_TRAINING_DIR = "eval_while_training"  # --mode=eval of a workdir a run is writing


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains per `config` in `workdir` (resuming the run there, see config.train.resume),
  evaluating per config.evals; returns the final metrics, also in WORKDIR/final_metrics.json."""
  setup = setup_lib.setup(config)
  evaluators = evaluation.Evaluators(config, setup, workdir)
  _check_batch_fits(setup)
  lock = run_lock.acquire_for_run(workdir)  # one writer per workdir, up to final_metrics.json
  try:
    state, record = loop.train(setup, workdir, evaluators, lock)
    if not record:  # the run had finished before: its last training record, evaluated anew
      record = {**_logged_training(workdir, config.train.num_steps),
                **evaluators.run(state.params)}
    final = {"step": config.train.num_steps, **record}
    if jax.process_index() == 0:
      report = evaluators.write(final, config.train.num_steps)
      with open(os.path.join(workdir, workdir_lib.FINAL_METRICS_FILE), "w") as f:
        json.dump(final, f, indent=2, sort_keys=True)
      print(evaluation.headline(final, str(report), config.evals_split))
  finally:
    lock.release()
  return final


def _check_batch_fits(setup: Setup) -> None:
  """Refuses (one line, before the workdir or its lock is created) a batch whose inputs alone
  exceed a device's memory: compiling it would abort XLA rather than fail."""
  config = setup.config
  devices = setup.mesh.local_devices
  per_device = config.data.batch_size // len(setup.mesh.devices.flat)
  needed = per_device * math.prod(setup.observation_shape) * 4  # float32 observations
  free = device_memory.free_bytes(devices[0], len(devices))
  if needed > free:
    raise SetupError(
        f"config.data.batch_size={config.data.batch_size} needs {needed / 2**30:.1f} GiB of "
        f"inputs per device and a device has {free / 2**30:.1f} GiB free; use a smaller batch"
    )


def _logged_training(workdir: str, step: int) -> dict[str, float]:
  """The train/* and perf/* metrics logged at `step`, as the run that trained it reported them
  (process 0's metrics.jsonl)."""
  return {key: value for record in metrics_writer.read_metrics(workdir) if record["step"] == step
          for key, value in record.items() if key.startswith(("train/", "perf/"))}


def evaluate(config: ml_collections.ConfigDict, workdir: str, step: int | None = None
             ) -> dict[str, float]:
  """`--mode=eval`: restores checkpoint `step` of `workdir` (default: the best by
  config.train.keep_best_metric, else the latest) onto config.mesh and runs the evaluators of
  config.evals; returns their metrics with the step evaluated (eval/ records both)."""
  state, step, setup = restore_state(config, workdir, step)
  training = run_lock.holder(workdir)
  # A run still writing this workdir owns eval/ (its final report goes there): report aside.
  out = os.path.join(workdir, EVAL_WHILE_TRAINING_DIR, str(step)) if training else workdir
  evaluators = evaluation.Evaluators(config, setup, out)
  metrics = {"step": step, **evaluators.run(state.params)}
  if jax.process_index() == 0:
    checkpoint = os.path.join(checkpoint_lib.checkpoint_dir(workdir), str(step))
    report = evaluators.write(metrics, step, checkpoint)
    if training:
      print(f"workdir {workdir} is being trained ({training}): this report is in {out}, its "
            "eval/ is the run's")
    print(f"evaluated checkpoint {checkpoint}")
    print(evaluation.headline(metrics, str(report), config.evals_split))
  return metrics
