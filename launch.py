r"""Runs an experiment: flags only, the work is done by mlvae_jax.

  python launch.py --config=experiments/digits.py --workdir=/tmp/digits
  python launch.py --config=experiments/mnist.py:likelihood=gaussian --workdir=/tmp/mnist \
      --config.train.num_steps=10000
  python launch.py --config=experiments/digits.py --workdir=/tmp/digits --mode=eval \
      --config.mesh.data=1
  python launch.py --config=experiments/digits.py:smoke --workdir=/tmp/sweep --mode=sweep \
      --sweep_parallel=2            # or --sweep_print_only for a cluster scheduler

Multi-host: give every process --coordinator_address=HOST:PORT --num_processes=P
--process_id=I (or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID), or
--distributed alone: under srun it reads SLURM's variables (launch/slurm.sbatch), on a Cloud
TPU pod JAX finds the workers itself (launch/tpu_vm.sh); docs/cluster.md.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file and its arg: experiments/NAME.py[:arg,...].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (or of the sweep).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sweep"], "What to do.")
_SWEEP = flags.DEFINE_string(
    "sweep", None, "FILE[:ARG] with get_sweep(arg); default: the --config file (and its arg)."
)
_SWEEP_PARALLEL = flags.DEFINE_integer("sweep_parallel", 1, "Sweep points run at once here.")
_SWEEP_PRINT_ONLY = flags.DEFINE_bool(
    "sweep_print_only", False, "Print one launch command per sweep point instead of running."
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: index of this process.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Multi-host: read the cluster's layout (SLURM's variables; JAX's detection on Cloud TPU, "
    "MPI); the three flags above, where given, win."
)
flags.mark_flags_as_required(["config", "workdir"])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, but a bad flag ends the run with one line rather than a traceback."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse failure is the user's input
    from mlvae_jax import config_helpers

    sys.exit(f"launch.py: error: {config_helpers.describe_flag_error(argv[1:], e)}")


def main(argv: list[str]) -> None:
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # libraries log much at INFO; --verbosity=0 shows it
  from mlvae_jax import sweep, train
  from mlvae_jax.config_helpers import SetupError, describe_flag_error
  from mlvae_jax.training import cluster_env
  from mlvae_jax.training.checkpoint import SaveError
  from mlvae_jax.training.nonfinite import NonFiniteError
  from mlvae_jax.training.preemption import RESUMABLE_EXIT_CODE, Preempted

  try:
    config = _CONFIG.value
    config.to_dict()  # a config file that failed to load raises only when first used
  except Exception as e:  # noqa: BLE001 - the config file failed to load
    sys.exit(f"launch.py: error: {describe_flag_error(sys.argv[1:], e)}")
  try:
    if _MODE.value == "sweep":
      sys.exit(sweep.launch(
          config,
          config_spec=config_flags.get_config_filename(flags.FLAGS["config"]),
          overrides=config_flags.get_override_values(flags.FLAGS["config"]),
          workdir=_WORKDIR.value,
          sweep_file=_SWEEP.value,
          parallel=_SWEEP_PARALLEL.value,
          print_only=_SWEEP_PRINT_ONLY.value,
          launcher=(sys.executable, os.path.abspath(__file__)),
      ))
    cluster_env.initialize(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, distributed=_DISTRIBUTED.value
    )
    if _MODE.value == "train":
      train.train_and_evaluate(config, _WORKDIR.value)
    else:
      print(json.dumps(train.evaluate(config, _WORKDIR.value), sort_keys=True))
  except (SetupError, NonFiniteError, SaveError) as e:
    sys.exit(f"launch.py: error: {e}")
  except Preempted as e:  # the same command resumes: schedulers may retry on this status
    print(f"launch.py: {e}", file=sys.stderr)
    sys.exit(RESUMABLE_EXIT_CODE)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
