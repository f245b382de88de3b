r"""Training speed end to end, in one run: the step alone, the whole loop (host batches and
the split kept on the devices, one step and K steps per call), the same model in PyTorch,
against XLA's FLOP count and a matmul peak measured in the same run.

  python benchmarks/bench_train_loop.py --manual_dir=../shared/data/mnist \
      [--batch_sizes=256,1024] [--steps_per_call=16] \
      [--out=benchmarks/results/bench_train_loop.json]

The model is experiments/mnist.py:paper_groups_of_8 (MLP 500 tanh, Bernoulli, fixed groups of 8, G=N/8,
Adam). "step" times the loop's own compiled call on a batch already on the device; "loop"
rows run `loop.train` for real (data pipeline, prefetch, logging, no evaluation) and report
the best logged window after the first, "defaults" with data.device_resident and
train.steps_per_call left at 'auto'; "torch" is benchmarks/torch_mlvae.py on JAX's device
(CUDA when JAX runs on a GPU), eager and through torch.compile, when PyTorch is importable
(the `bench` extra). Every figure is the best of --repeats alternating runs.
Peak memory is the allocator's high-water mark where the backend keeps one (GPU), else XLA's
account of the train call (state, inputs, temporaries) plus the resident split. A batch that
cannot fit stops the benchmark before it trains, with the loop's one-line error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from machine_info import describe  # noqa: E402  (beside this script)
from mlvae_jax import config_helpers  # noqa: E402
from mlvae_jax.training import device_memory, loop, metrics_writer, nonfinite
from mlvae_jax.training import setup as setup_lib, step_calls  # noqa: E402
from mlvae_jax.training import feed as train_feed  # noqa: E402
from mlvae_jax.training.feed import host as feed_host  # noqa: E402

MATMUL_SIZES = {"cpu": (1024, 2048), "default": (4096, 8192)}  # square f32 matmuls to time


def _parse() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="experiments/mnist.py:paper_groups_of_8", help="experiment[:arg]")
  parser.add_argument("--manual_dir", default=str(REPO.parent / "shared/data/mnist"))
  parser.add_argument("--data_dir", default="", help="prepared data ('' = the default cache)")
  parser.add_argument("--batch_sizes", default="256,1024")
  parser.add_argument("--steps_per_call", type=int, default=16, help="K of the K-step rows")
  parser.add_argument("--step_steps", type=int, default=100, help="timed steps per step row")
  parser.add_argument("--loop_steps", type=int, default=320, help="steps per loop run (4 windows)")
  parser.add_argument("--repeats", type=int, default=2, help="alternating runs; the best counts")
  parser.add_argument("--loops", default="host,resident,defaults",
                      help="loop rows to run: host and resident (K=1 and K), defaults")
  parser.add_argument("--out", default=str(REPO / "benchmarks/results/bench_train_loop.json"))
  return parser.parse_args()


@dataclasses.dataclass
class Row:
  what: str
  batch_size: int
  steps_per_call: int
  seconds_per_step: float
  memory_bytes: int | None = None

  @property
  def obs_per_sec(self) -> float:
    return self.batch_size / self.seconds_per_step


class NoEvaluation:
  """loop.train's hook with nothing to evaluate: the loop is timed alone."""

  def __call__(self, step, params, *, saving, last):
    return {}

  def due(self, step, *, saving, last):
    return []


def best(measure: Callable[[], float], repeats: int, previous: float | None = None) -> float:
  """The least of `repeats` measurements (and of `previous`)."""
  values = [measure() for _ in range(repeats)]
  return min(values + ([previous] if previous is not None else []))


def matmul_peak(repeats: int) -> float:
  """FLOP/s of the fastest square float32 matmul of MATMUL_SIZES on the default device."""
  rates = []
  for size in MATMUL_SIZES.get(jax.default_backend(), MATMUL_SIZES["default"]):
    a = jnp.asarray(np.random.default_rng(0).random((size, size), np.float32))
    matmul = jax.jit(lambda m: m @ m)
    jax.block_until_ready(matmul(a))
    calls = max(2, int(2e10 / (2 * size**3)))

    def timed() -> float:
      start = time.perf_counter()
      for _ in range(calls):
        out = matmul(a)
      jax.block_until_ready(out)
      return (time.perf_counter() - start) / calls

    rates.append(2 * size**3 / best(timed, repeats))
  return max(rates)


def make_config(args: argparse.Namespace, batch_size: int, resident: str, steps_per_call: int):
  path, arg = config_helpers.split_config_spec(args.config)
  path = path if os.path.exists(path) else str(REPO / path)  # run from anywhere
  config = config_helpers.load_module(path).get_config(arg)
  config.data.update(manual_dir=args.manual_dir, data_dir=args.data_dir, batch_size=batch_size,
                     num_groups=batch_size // config.data.group_size, device_resident=resident)
  config.train.update(steps_per_call=steps_per_call, keep_best_metric="", resume="restart")
  config.mesh.data = 1
  return config


class StepTimer:
  """The loop's compiled call on one host batch already on the device, K copies per call."""

  def __init__(self, config):
    self.setup = setup = setup_lib.setup(config)
    self.k = config.train.steps_per_call
    feed = train_feed.make_feed(setup)
    self.compiled = loop.compile_call(setup, feed)
    self.memory = device_memory.call_bytes(self.compiled)
    self.flops_per_step = self.compiled.cost_analysis()["flops"] / self.k
    self.inputs = feed.take(self.k)
    self.data = feed.data
    self.state = jax.jit(setup.init, out_shardings=setup.state_shardings)()
    self.health = jax.jit(nonfinite.Health.initial, out_shardings=setup.replicated)()
    self._calls(2)  # warm-up

  def _calls(self, count: int) -> None:
    previous = None
    for _ in range(count):
      self.state, self.health, metrics = self.compiled(self.state, self.health, self.inputs,
                                                       self.data)
      if previous is not None:
        jax.block_until_ready(previous)  # two calls in flight at most, as in the loop
      previous = metrics
    jax.block_until_ready(previous)

  def seconds_per_step(self, steps: int) -> float:
    calls = max(1, steps // self.k)
    start = time.perf_counter()
    self._calls(calls)
    return (time.perf_counter() - start) / (calls * self.k)


class TorchTimer:
  """benchmarks/torch_mlvae.py on the same batch shape and the same device as JAX (CUDA when
  JAX runs on a GPU), eager or through torch.compile."""

  @staticmethod
  def create(config, batch: dict[str, np.ndarray], compiled: bool) -> "TorchTimer | None":
    """None (saying why) unless PyTorch is importable, can use JAX's device, and the model
    is the twin's (MLP, Bernoulli)."""
    if (config.model.family, config.model.likelihood) != ("mlp", "bernoulli"):
      return None
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      print("torch rows skipped: PyTorch is not importable (pip install -e .[bench])")
      return None
    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
      print("torch rows skipped: JAX runs on a GPU but this PyTorch has no CUDA")
      return None
    try:
      return TorchTimer(config, batch, device, compiled)
    except Exception as error:  # noqa: BLE001 - torch.compile needs a working toolchain
      print(f"torch {'compiled' if compiled else 'eager'} row skipped: "
            f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
      return None

  def __init__(self, config, batch: dict[str, np.ndarray], device: str, compiled: bool):
    import torch  # pylint: disable=import-outside-toplevel
    from torch_mlvae import TorchMLVAE, make_step  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    self.torch = torch
    self.device = device
    self.name = f"torch {torch.__version__} {device}, {'compiled' if compiled else 'eager'}"
    x = batch["x"].reshape(len(batch["x"]), -1)
    model = TorchMLVAE(x.shape[1], config.model.hidden, config.model.content_dim,
                       config.model.style_dim).to(device)
    self.step = make_step(model, config.optim.learning_rate, compiled)
    g = config.data.num_groups
    group_ids = torch.from_numpy(np.minimum(batch["group_ids"], g - 1)).long()
    self.args = (torch.from_numpy(x).to(device), group_ids.to(device),
                 torch.from_numpy(batch["mask"]).to(device), g)
    for _ in range(3):  # warm-up (torch.compile compiles on the first call)
      self.step(*self.args)
    self._sync()

  def _sync(self) -> None:
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def seconds_per_step(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      self.step(*self.args)
    self._sync()
    return (time.perf_counter() - start) / steps


def loop_seconds_per_step(args: argparse.Namespace, config, root: str) -> float:
  """Seconds per step of `loop.train`, from the best logged window after the first."""
  window = max(1, args.loop_steps // 4 // config.train.steps_per_call) * config.train.steps_per_call
  config.train.update(num_steps=4 * window, log_every=window, checkpoint_every=4 * window)
  workdir = tempfile.mkdtemp(dir=root)
  try:
    loop.train(setup_lib.setup(config), workdir, NoEvaluation())
    times = [r["perf/step_time_s"] for r in metrics_writer.read_metrics(workdir)
             if "perf/step_time_s" in r]
  finally:
    shutil.rmtree(workdir)
  return min(times[1:])


def measure(args: argparse.Namespace, batch_size: int, root: str) -> tuple[list[Row], dict]:
  """Every row of one batch size, and what the rows are judged against."""
  k = args.steps_per_call
  ks = (1, k) if k > 1 else (1,)
  steps = {n: StepTimer(make_config(args, batch_size, "off", n)) for n in ks}
  batch = next(feed_host.make_iterator(steps[1].setup.config, "train"))
  torch_timers = [TorchTimer.create(steps[1].setup.config, batch, compiled)
                  for compiled in (False, True)]
  timers: dict[str, tuple[Callable[[], float], int, int | None]] = {
      f"step, K={n}": (lambda t=t: t.seconds_per_step(args.step_steps), n, t.memory)
      for n, t in steps.items()}
  for torch_timer in filter(None, torch_timers):
    timers[torch_timer.name] = (
        lambda t=torch_timer: t.seconds_per_step(args.step_steps), 1, None)
  loops = args.loops.split(",")
  for resident in [mode for mode, name in (("off", "host"), ("on", "resident")) if name in loops]:
    for n in ks:
      config = make_config(args, batch_size, resident, n)
      name = f"loop, {'resident' if resident == 'on' else 'host'} data, K={n}"
      timers[name] = (lambda c=config: loop_seconds_per_step(args, c.copy_and_resolve_references(),
                                                              root), n, None)
  if "defaults" in loops:
    defaults = step_calls.resolve_steps_per_call(make_config(args, batch_size, "auto", "auto"))
    k_auto = defaults.train.steps_per_call
    timers[f"loop, defaults (K=auto={k_auto})"] = (
        lambda: loop_seconds_per_step(args, defaults.copy_and_resolve_references(), root),
        k_auto, None)
  seconds: dict[str, float] = {}
  for _ in range(args.repeats):  # alternating, so a busy spell of the machine hits every row
    for name, (timed, _, _) in timers.items():
      seconds[name] = best(timed, 1, seconds.get(name))
  rows = [Row(name, batch_size, n, seconds[name], memory) for name, (_, n, memory) in
          timers.items()]
  context = {"flops_per_obs": steps[1].flops_per_step / batch_size,
             "torch": [t.name for t in torch_timers if t]}
  return rows, context


def main() -> None:
  args = _parse()
  root = tempfile.mkdtemp(prefix="bench_train_loop_")
  peak = matmul_peak(args.repeats)
  batch_sizes = map(int, args.batch_sizes.split(","))
  measured = [measure(args, batch_size, root) for batch_size in batch_sizes]
  peak = max(peak, matmul_peak(args.repeats))  # before and after the rows: the better spell
  results = []
  for rows, context in measured:
    step = rows[0].obs_per_sec
    for row in rows:
      gflops = context["flops_per_obs"] * row.obs_per_sec / 1e9
      results.append({**dataclasses.asdict(row), "obs_per_sec": row.obs_per_sec,
                      "of_step": row.obs_per_sec / step, "gflop_per_s": gflops,
                      "of_matmul_peak": gflops * 1e9 / peak, **context})
  peak_memory = device_memory.peak_bytes(jax.devices()[0])
  shutil.rmtree(root)
  print(f"{jax.default_backend()}: matmul peak {peak / 1e9:.1f} GFLOP/s; peak device memory "
        + (f"{peak_memory / 2**30:.2f} GiB" if peak_memory else "not kept by this backend"))
  print("| what | batch | ms/step | obs/s | of step K=1 | GFLOP/s | of matmul peak | call memory |")
  print("|---|---|---|---|---|---|---|---|")
  for r in results:
    memory = f"{r['memory_bytes'] / 2**20:.0f} MiB" if r["memory_bytes"] else ""
    print(f"| {r['what']} | {r['batch_size']} | {1e3 * r['seconds_per_step']:.2f} | "
          f"{r['obs_per_sec']:,.0f} | {r['of_step']:.0%} | {r['gflop_per_s']:.1f} | "
          f"{r['of_matmul_peak']:.0%} | {memory} |")
  for r in results:
    if r["what"].startswith("torch"):
      step = next(s for s in results if s["batch_size"] == r["batch_size"])
      print(f"batch {r['batch_size']}: step {step['obs_per_sec'] / r['obs_per_sec']:.2f}x "
            f"{r['what']}")
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "machine": describe(), "config": args.config, "matmul_peak_flop_per_s": peak,
      "peak_device_memory_bytes": peak_memory, "step_steps": args.step_steps,
      "loop_steps": args.loop_steps, "repeats": args.repeats, "results": results}, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
