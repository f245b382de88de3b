r"""Steady-state speed of the jitted, sharded train step: seconds per step and observations/s.

Synthetic batches of the experiment's shapes (no dataset needed), groups of
config.data.group_size, over meshes of several sizes:

  python benchmarks/bench_train_step.py --config=experiments/mnist.py --devices=1,8 \
      --batch_sizes=256,1024 --cpu_devices=8

On CPU, --cpu_devices splits the host into that many XLA devices (set before JAX starts), so
"8 devices" there measures sharding overhead rather than extra compute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="experiments/mnist.py", help="experiment[:arg]")
  parser.add_argument("--devices", default="1,8", help="mesh sizes to time, comma-separated")
  parser.add_argument("--batch_sizes", default="256", help="global batch sizes, comma-separated")
  parser.add_argument("--steps", type=int, default=100, help="timed steps per setting")
  parser.add_argument("--cpu_devices", type=int, default=0, help="XLA host devices (CPU only)")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks/results/train_step.json"),
                      help="where the JSON results go")
  return parser.parse_args()


def main() -> None:
  args = _parse()
  if args.cpu_devices:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.cpu_devices}")
  import jax
  import numpy as np

  from machine_info import describe  # beside this script; imports jax, so after XLA_FLAGS
  from mlvae_jax import data as data_lib
  from mlvae_jax import config_helpers
  from mlvae_jax.training import loop, setup as setup_lib
  from mlvae_jax.training.feed import host as feed_host

  path, arg = config_helpers.split_config_spec(args.config)
  rows = []
  print("| backend | devices | batch | ms/step | obs/s |\n|---|---|---|---|---|")
  for batch_size in map(int, args.batch_sizes.split(",")):
    for devices in map(int, args.devices.split(",")):
      if devices > jax.device_count():
        continue
      config = config_helpers.load_module(path).get_config(arg)
      config.data.batch_size = batch_size
      config.data.num_groups = batch_size // config.data.group_size
      config.mesh.data = devices
      setup = setup_lib.setup(config)
      state = jax.jit(setup.init, out_shardings=setup.state_shardings)()
      step = jax.jit(loop.make_train_step(setup.loss_fn, setup.tx, setup.schedule),
                     in_shardings=(setup.state_shardings, setup.batch_sharding),
                     out_shardings=(setup.state_shardings, setup.replicated), donate_argnums=(0,))
      x = np.random.default_rng(0).random((batch_size, *data_lib.observation_shape(config.data)),
                                          dtype=np.float32)
      host = {"x": x, "group_ids": (np.arange(batch_size) // config.data.group_size).astype(np.int32),
              "mask": np.ones(batch_size, bool)}
      batch = feed_host.global_batch(host, setup.mesh)
      for _ in range(5):  # compile and warm up
        state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      start = time.perf_counter()
      previous = metrics
      for _ in range(args.steps):
        state, metrics = step(state, batch)
        jax.block_until_ready(previous)  # at most 2 steps in flight, as in loop.py
        previous = metrics
      jax.block_until_ready(metrics)
      seconds = (time.perf_counter() - start) / args.steps
      print(f"| {jax.default_backend()} | {devices} | {batch_size} | {1e3 * seconds:.2f} | "
            f"{batch_size / seconds:,.0f} |", flush=True)
      rows.append({"backend": jax.default_backend(), "devices": devices, "batch_size": batch_size,
                   "seconds_per_step": seconds, "obs_per_sec": batch_size / seconds})
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"machine": describe(), "config": args.config, "steps": args.steps, "results": rows},
              f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
