r"""The host's work per training step: what feeding and launching a call ask of the host.

  python benchmarks/bench_feed.py --manual_dir=../shared/data/mnist \
      [--batch_sizes=256,4096] [--steps_per_call=auto] [--out=benchmarks/results/bench_feed.json]

For the host path (data.device_resident=off: batches assembled from the pipeline) and the
device path (on: the split resident, layouts drawn in the call), with the default K
(train.steps_per_call='auto' on this backend): "feed" is the producer's work for one call,
`feed.take(K)` (assembling its inputs and copying them to the devices), over several epochs
so the host path's epoch plans are counted; "dispatch" is the host's time to launch the
compiled call with the devices idle (what the loop's thread spends per call). Both are divided by K: the
host's work per training step. The model is experiments/mnist.py:paper_groups_of_8 (fixed groups of 8).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from machine_info import describe  # noqa: E402  (beside this script)
from mlvae_jax import config_helpers, data as data_lib  # noqa: E402
from mlvae_jax.training import loop, nonfinite  # noqa: E402
from mlvae_jax.training import feed as train_feed  # noqa: E402
from mlvae_jax.training import setup as setup_lib  # noqa: E402

PATHS = {"host": "off", "device": "on"}
EPOCHS = 3  # of the host path's plans inside each feed measurement
DISPATCHES = 30
# Calls taken before the timing: the first plan and transfer, the stacking buffers' first
# touch, and the host allocator's first large batches (glibc maps a fresh 12.8 MiB batch of
# 4096 images until its threshold has grown: ~12 ms a step for the first calls, ~2 after).
WARMUP_CALLS = 3


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="experiments/mnist.py:paper_groups_of_8", help="experiment[:arg]")
  parser.add_argument("--manual_dir", default=str(REPO.parent / "shared/data/mnist"))
  parser.add_argument("--data_dir", default="", help="prepared data ('' = the default cache)")
  parser.add_argument("--batch_sizes", default="256,4096")
  parser.add_argument("--steps_per_call", default="auto", help="'auto' or K")
  parser.add_argument("--out", default=str(REPO / "benchmarks/results/bench_feed.json"))
  return parser.parse_args()


def make_config(args: argparse.Namespace, batch_size: int, resident: str):
  path, arg = config_helpers.split_config_spec(args.config)
  config = config_helpers.load_module(str(REPO / path)).get_config(arg)
  config.data.update(manual_dir=args.manual_dir, data_dir=args.data_dir, batch_size=batch_size,
                     num_groups=batch_size // config.data.group_size, device_resident=resident)
  k = args.steps_per_call
  config.train.steps_per_call = k if k == "auto" else int(k)
  config.mesh.data = 1
  return config


def measure(args: argparse.Namespace, batch_size: int, path: str) -> dict:
  """Microseconds of host work per step on one path at one batch size."""
  setup = setup_lib.setup(make_config(args, batch_size, PATHS[path]))
  k = setup.config.train.steps_per_call
  feed = train_feed.make_feed(setup)
  assert (feed.data is not None) == (path == "device"), f"{path} path not taken"
  compiled = loop.compile_call(setup, feed)
  per_epoch = data_lib.make_batcher(setup.config.data, "train",
                                    seed=setup.config.seed).batches_in_epoch(0)
  calls = max(8, -(-EPOCHS * per_epoch // k))
  for _ in range(WARMUP_CALLS):
    feed.take(k)
  start = time.perf_counter()
  for _ in range(calls):
    inputs = feed.take(k)
  feed_s = (time.perf_counter() - start) / calls
  state = jax.jit(setup.init, out_shardings=setup.state_shardings)()
  health = jax.jit(nonfinite.Health.initial, out_shardings=setup.replicated)()
  launches = []
  for _ in range(DISPATCHES):
    jax.block_until_ready((state, health))
    start = time.perf_counter()
    state, health, metrics = compiled(state, health, inputs, feed.data)
    launches.append(time.perf_counter() - start)
  jax.block_until_ready(metrics)
  dispatch_s = statistics.median(launches)
  row = {"path": path, "batch_size": batch_size, "steps_per_call": k, "calls_fed": calls,
         "feed_us_per_step": 1e6 * feed_s / k, "dispatch_us_per_step": 1e6 * dispatch_s / k,
         "host_us_per_step": 1e6 * (feed_s + dispatch_s) / k}
  print(row, flush=True)
  return row


def main() -> None:
  args = _parse()
  rows = [measure(args, int(n), path) for n in args.batch_sizes.split(",") for path in PATHS]
  print(f"{jax.default_backend()}: host work per training step ({args.config})")
  print("| path | batch | K | feed us/step | dispatch us/step | host us/step |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['path']} | {r['batch_size']} | {r['steps_per_call']} | "
          f"{r['feed_us_per_step']:.1f} | {r['dispatch_us_per_step']:.1f} | "
          f"{r['host_us_per_step']:.1f} |")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": describe(), "config": args.config, "rows": rows},
                            indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
