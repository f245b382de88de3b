r"""Candidate kernels of the train step, timed in the whole step on this backend (not a test).

Each candidate replaces one piece of the step while the step is traced; the steps are then
timed alternately, best of --repeats, on one synthetic MNIST-shaped batch:

  python benchmarks/bench_kernels.py [--batch_sizes=256,1024] \
      [--out=benchmarks/results/kernels.json]

- `adopted`: the library as it is.
- `likelihood over [H, W, 1]`: the per-observation log-likelihood summed over the image's
  axes, as before models.log_likelihood flattened it (XLA:CPU reduces that slowly).
- `one-hot segment sum`: group sums as a [G, N] one-hot matmul instead of a scatter-add.
- `fused Bernoulli`: x*l - softplus(l) with a hand-written gradient (x - sigmoid(l)) sharing
  exp(-|l|) between value and gradient, instead of jax.nn.softplus and autodiff.

A candidate is adopted for a backend only where it measures faster there (docs/runtime.md, Training
speed, records which and where).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import time
from typing import Callable, Iterator

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments import mnist  # noqa: E402
from machine_info import describe  # noqa: E402  (beside this script)
from mlvae_jax import groups, models, objectives  # noqa: E402
from mlvae_jax.training import loop, setup as state_lib


def likelihood_over_image_axes(likelihood: models.Likelihood, x: jax.Array) -> jax.Array:
  loc, logvar = likelihood
  if logvar is None:
    return jnp.sum(x * loc - jax.nn.softplus(loc))
  return jnp.sum(-0.5 * (np.log(2 * np.pi) + logvar + (x - loc) ** 2 * jnp.exp(-logvar)))


def one_hot_segment_sum(values: jax.Array, group_ids: jax.Array, num_groups: int) -> jax.Array:
  one_hot = (group_ids[None, :] == jnp.arange(num_groups)[:, None]).astype(values.dtype)
  flat = values.reshape(values.shape[0], -1)
  return (one_hot @ flat).reshape((num_groups, *values.shape[1:]))


@jax.custom_vjp
def _bernoulli_sum(logits: jax.Array, x: jax.Array) -> jax.Array:
  return _bernoulli_forward(logits, x)[0]


def _bernoulli_forward(logits, x):
  e = jnp.exp(-jnp.abs(logits))
  value = jnp.sum(x * logits - (jnp.maximum(logits, 0.0) + jnp.log1p(e)))
  return value, (logits, x, e)


def _bernoulli_backward(residuals, g):
  logits, x, e = residuals
  sigmoid = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)
  return g * (x - sigmoid), g * logits


_bernoulli_sum.defvjp(_bernoulli_forward, _bernoulli_backward)


def fused_bernoulli(likelihood: models.Likelihood, x: jax.Array) -> jax.Array:
  if likelihood.logvar is None:
    return _bernoulli_sum(likelihood.loc.reshape(-1), x.reshape(-1))
  return models.log_likelihood(likelihood, x)


# name -> (module, attribute, replacement); None: the library as it is
CANDIDATES = {
    "adopted": None,
    "likelihood over [H, W, 1]": (objectives, "log_likelihood", likelihood_over_image_axes),
    "one-hot segment sum": (groups, "segment_sum", one_hot_segment_sum),
    "fused Bernoulli": (objectives, "log_likelihood", fused_bernoulli),
}


@contextlib.contextmanager
def replaced(candidate) -> Iterator[None]:
  """The candidate in place while a step is traced."""
  if candidate is None:
    yield
    return
  module, name, replacement = candidate
  original = getattr(module, name)
  setattr(module, name, replacement)
  try:
    yield
  finally:
    setattr(module, name, original)


def timed_step(batch_size: int, candidate) -> Callable[[int], float]:
  """A function timing `steps` steps (seconds per step) of the step built with `candidate`."""
  config = mnist.get_config("paper_groups_of_8")
  config.data.update(batch_size=batch_size, num_groups=batch_size // config.data.group_size)
  config.mesh.data = 1
  setup = state_lib.setup(config)
  state = jax.jit(setup.init)()
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.random((batch_size, 28, 28, 1), np.float32)),
           "group_ids": jnp.asarray(np.arange(batch_size) // config.data.group_size, jnp.int32),
           "mask": jnp.ones(batch_size, bool)}
  with replaced(candidate):
    step = jax.jit(loop.make_train_step(setup.loss_fn, setup.tx, setup.schedule)).lower(
        state, batch).compile()
  jax.block_until_ready(step(state, batch))

  def seconds_per_step(steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      out = step(state, batch)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps

  return seconds_per_step


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_sizes", default="256,1024")
  parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
  parser.add_argument("--repeats", type=int, default=5, help="alternating runs; the best counts")
  parser.add_argument("--out", default=str(REPO / "benchmarks/results/kernels.json"))
  args = parser.parse_args()
  results = []
  print("| backend | batch | candidate | ms/step | vs adopted |\n|---|---|---|---|---|")
  for batch_size in map(int, args.batch_sizes.split(",")):
    timers = {name: timed_step(batch_size, c) for name, c in CANDIDATES.items()}
    seconds = {name: float("inf") for name in timers}
    for _ in range(args.repeats):  # alternating, so a busy spell hits every candidate
      for name, timer in timers.items():
        seconds[name] = min(seconds[name], timer(args.steps))
    for name, s in seconds.items():
      ratio = seconds["adopted"] / s
      print(f"| {jax.default_backend()} | {batch_size} | {name} | {1e3 * s:.2f} | {ratio:.2f}x |")
      results.append({"batch_size": batch_size, "candidate": name, "seconds_per_step": s,
                      "speed_vs_adopted": ratio})
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": describe(), "steps": args.steps,
                             "repeats": args.repeats, "results": results}, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
