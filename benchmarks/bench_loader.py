r"""Loader throughput on MNIST versus the train step that consumes its batches (not a test).

The loader must outpace training by 10x so the accelerator never waits for data. Measures
batches/s and per-batch latency of the MNIST train loader (N=256, G=32; fixed k=8 and the
natural policy), and, when the model code is importable, the steps/s of a jitted train
step (value_and_grad of the ML-VAE loss + an Adam update) on the same batches.

  python benchmarks/bench_loader.py --manual_dir=../shared/data/mnist \
      [--data_dir=/tmp/tfds] [--out=benchmarks/results/loader.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import statistics
import time

import numpy as np

from machine_info import describe  # beside this script
from mlvae_jax import configs, data

REPO = pathlib.Path(__file__).resolve().parents[1]
POLICIES = {"fixed k=8": dict(group_policy="fixed", group_size=8),
            "natural": dict(group_policy="natural")}


def mnist_config(args: argparse.Namespace, policy: dict) -> configs.ml_collections.ConfigDict:
  config = configs.base_config()
  config.data.update(name="mnist", manual_dir=args.manual_dir, data_dir=args.data_dir,
                     batch_size=256, num_groups=32, **policy)
  config.model.update(family="mlp", hidden=500, activation="tanh", content_dim=10, style_dim=10)
  return config


def time_loader(config, num_batches: int) -> tuple[dict, list]:
  iterator = data.make_batch_iterator(config.data, "train", seed=0)
  batches = [next(iterator) for _ in range(10)]  # warm-up: threads started, epoch planned
  latencies = []
  start = time.perf_counter()
  for _ in range(num_batches):
    t = time.perf_counter()
    next(iterator)
    latencies.append(time.perf_counter() - t)
  elapsed = time.perf_counter() - start
  return {
      "batches_per_s": num_batches / elapsed,
      "latency_ms_median": 1e3 * statistics.median(latencies),
      "latency_ms_p95": 1e3 * float(np.percentile(latencies, 95)),
  }, batches


def time_train_step(config, batches: list, num_steps: int) -> float | None:
  """Steps/s of value_and_grad(loss) + adam on `batches`; None without the model code."""
  if not all(importlib.util.find_spec(f"mlvae_jax.{m}") for m in ("models", "objectives")):
    return None
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from mlvae_jax import models, objectives  # pylint: disable=import-outside-toplevel

  model = models.build_model(config.model, data.observation_shape(config.data))
  loss_fn = objectives.make_loss_fn(model, config)
  params = model.init(jax.random.key(0), batches[0]["x"][:1])["params"]
  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, opt_state, batch, rng):
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  device_batches = [jax.device_put(b) for b in batches]
  opt_state, rng = tx.init(params), jax.random.key(1)
  params, opt_state, loss = step(params, opt_state, device_batches[0], rng)  # compile
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for i in range(num_steps):
    params, opt_state, loss = step(params, opt_state, device_batches[i % len(batches)], rng)
  jax.block_until_ready(loss)
  return num_steps / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manual_dir", default=str(REPO.parent / "shared/data/mnist"))
  parser.add_argument("--data_dir", default="", help="prepared data ('' = the default cache)")
  parser.add_argument("--num_batches", type=int, default=500)
  parser.add_argument("--num_steps", type=int, default=50)
  parser.add_argument("--out", default=str(REPO / "benchmarks/results/loader.json"))
  args = parser.parse_args()
  rows = []
  for name, policy in POLICIES.items():
    config = mnist_config(args, policy)
    loader, batches = time_loader(config, args.num_batches)
    steps_per_s = time_train_step(config, batches, args.num_steps)
    ratio = loader["batches_per_s"] / steps_per_s if steps_per_s else None
    rows.append(dict(policy=name, **loader, train_steps_per_s=steps_per_s, ratio=ratio))
  print(f"{'policy':<10} {'batches/s':>10} {'median ms':>10} {'p95 ms':>8} "
        f"{'steps/s':>8} {'ratio':>7}")
  for r in rows:
    step = f"{r['train_steps_per_s']:8.1f}" if r["train_steps_per_s"] else f"{'-':>8}"
    ratio = f"{r['ratio']:6.1f}x" if r["ratio"] else f"{'-':>7}"
    print(f"{r['policy']:<10} {r['batches_per_s']:10.0f} {r['latency_ms_median']:10.3f} "
          f"{r['latency_ms_p95']:8.3f} {step} {ratio}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(machine=describe(), batch_size=256, num_groups=32,
                                 results=rows), indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
