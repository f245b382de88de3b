r"""What a checkpoint's integrity record costs beside the save itself (CPU, small).

Saves the initial train state of an experiment (parameters and Adam's moments) through
`checkpoint.Checkpoints` and times: the whole save as a run makes it (until its record is
written), and within it the digests of the arrays taken when the save starts
(`integrity.array_record`, host copy + SHA-256) and the record written after the commit
(every file read back and hashed); per read, a reader opening the directory (every file
checked) and a restore, and within it the restored values checked:

  python benchmarks/bench_checkpoint.py --config=experiments/mnist.py --repeats=5

Figures are medians over --repeats saves of the same state into a fresh directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="experiments/mnist.py", help="experiment[:arg]")
  parser.add_argument("--repeats", type=int, default=5, help="saves timed")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/checkpoint.json"),
                      help="where the JSON results go")
  return parser.parse_args()


def _timed(fn) -> tuple[float, object]:
  started = time.perf_counter()
  result = fn()
  return time.perf_counter() - started, result


def main() -> None:
  args = _parse()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import numpy as np

  from machine_info import describe  # beside this script
  from mlvae_jax import config_helpers
  from mlvae_jax.training import checkpoint, integrity
  from mlvae_jax.training import setup as setup_lib

  path, arg = config_helpers.split_config_spec(args.config)
  config = config_helpers.load_module(path).get_config(arg)
  config.mesh.data = 1
  setup = setup_lib.setup(config)
  state = jax.block_until_ready(jax.jit(setup.init, out_shardings=setup.state_shardings)())
  state_bytes = sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(state))
  names = ("save_s", "array_digests_s", "record_s", "open_verify_s", "restore_s",
           "verify_values_s")
  times: dict[str, list[float]] = {name: [] for name in names}
  for _ in range(args.repeats):
    workdir = tempfile.mkdtemp(prefix="bench_checkpoint_")
    checkpoints = checkpoint.Checkpoints(workdir, config.train)
    step_dir = os.path.join(checkpoint.checkpoint_dir(workdir), "1")
    # The whole save as a run makes it: digests, orbax until committed, the record.
    save, _ = _timed(lambda: (checkpoints.save(1, state, {}, config),
                              checkpoints.finish_pending()))
    checkpoints.close()
    written = integrity.read_record(step_dir)
    digests, arrays = _timed(lambda: integrity.array_record(state))
    items = {name: item["value"] for name, item in written["items"].items()}
    record, _ = _timed(lambda: integrity.write_record(
        step_dir, integrity.build_record(step_dir, 1, arrays, items)))
    opened, reader = _timed(lambda: checkpoint.Checkpoints(workdir, read_only=True))
    restore, restored = _timed(lambda: reader.restore(1, setup.abstract_state, with_data=False))
    values, _ = _timed(lambda: integrity.verify_values(written, restored[0]))
    for name, value in zip(names, (save, digests, record, opened, restore, values)):
      times[name].append(value)
    shutil.rmtree(workdir)
  medians = {name: statistics.median(values) for name, values in times.items()}
  share = (medians["array_digests_s"] + medians["record_s"]) / medians["save_s"]
  result = {"config": args.config, "state_mib": state_bytes / 2**20, **medians,
            "integrity_share_of_save": share, "machine": describe()}
  print("| state MiB | save ms (all) | of which digests ms | record ms | open + verify ms "
        "| restore ms (all) | of which verify ms |\n|---|---|---|---|---|---|---|")
  print(f"| {state_bytes / 2**20:.1f} | " + " | ".join(
      f"{medians[name] * 1e3:.1f}" for name in names) + " |")
  print(f"integrity record: {share:.0%} of the save")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
