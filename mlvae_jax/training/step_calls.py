"""Several training steps per jitted call (config.train.steps_per_call = K or 'auto').

A small model's step is shorter than the host's work to dispatch it, so a call runs a
`lax.scan` over K steps and sums their metrics on the device. Its inputs are K slots
stacked along a new leading axis (feed/stacking.py). The loop ends a call early where the
host must act (log, evaluation, checkpoint, the last step): the call keeps its K slots, so
it compiles once, and the unused slots hold batches without a valid row, which are no
steps: state and health pass through them unchanged and their metrics count zero. K = 1 is
the plain step, unstacked.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

AUTO = "auto"
# K under config.train.steps_per_call='auto'. An accelerator's step is shorter than the host's
# dispatch (H200, MNIST paper model: loop at K=1 26% of its step at batch 256, at K=32 with
# the split resident 100%), so its calls run many steps. On CPU a dense step outlasts its
# dispatch, but launching a call costs the host ~0.5 ms whatever K is (2-core machine, MNIST
# paper model, benchmarks/bench_feed.py): K=32 makes that 15 us per step. Conv models there
# unroll their calls (`loop.scan_unroll`), whose compile time grows with K, for no gain: K=1.
AUTO_STEPS_PER_CALL = {"accelerator": 32, "cpu": {"mlp": 32, "conv": 1}}

Inputs = Mapping[str, jax.Array]
# step(state, health, batch) -> (state, health, metrics): nonfinite.guard_step's signature
Step = Callable[[Any, Any, Inputs], tuple[Any, Any, dict]]
# to_batch(one slot's inputs, data, the state's step) -> the step's batch (a resident split
# draws its layout of that step and gathers x here)
ToBatch = Callable[[Inputs, Any, jax.Array], Inputs]


def host_batch(inputs: Inputs, data: Any, step: jax.Array) -> Inputs:
  """The host path's `to_batch`: the inputs are the batch."""
  del data, step
  return inputs


def scan_steps(step: Step, steps_per_call: int, to_batch: ToBatch = host_batch,
               unroll: int = 1) -> Callable:
  """`call(state, health, inputs, data) -> (state, health, metric sums)` over the
  `steps_per_call` slots of `inputs` ([K, N, ...]); K = 1 takes unstacked inputs and is
  exactly `step`. A slot whose batch has no valid row is not a step. `unroll`: steps per
  iteration of the scan's loop (K: no loop at all)."""
  if steps_per_call == 1:
    return lambda state, health, inputs, data: step(state, health,
                                                    to_batch(inputs, data, state.step))

  def call(state: Any, health: Any, inputs: Inputs, data: Any) -> tuple[Any, Any, dict]:
    first = jax.tree.map(lambda leaf: leaf[0], inputs)
    batch_shapes = jax.eval_shape(to_batch, first, data, state.step)
    shapes = jax.eval_shape(step, state, health, batch_shapes)[2]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(carry, slot):
      state, health, sums = carry
      batch = to_batch(slot, data, state.step)
      # An unused slot runs no step at all (a cond, not a masked step): short calls cost
      # only their steps.
      state, health, metrics = jax.lax.cond(
          jnp.any(batch["mask"]), step, lambda state, health, batch: (state, health, zeros),
          state, health, batch)
      sums = jax.tree.map(lambda total, m: total + m.astype(total.dtype), sums, metrics)
      return (state, health, sums), None

    (state, health, sums), _ = jax.lax.scan(body, (state, health, zeros), inputs, unroll=unroll)
    return state, health, sums

  return call


def call_length(step: int, steps_per_call: int, stops_at: Callable[[int], bool]) -> int:
  """Steps of the call that follows `step`: up to the first step the host acts at
  (`stops_at`), at most `steps_per_call`."""
  for length in range(1, steps_per_call):
    if stops_at(step + length):
      return length
  return steps_per_call


def auto_steps_per_call(backend: str, model_family: str) -> int:
  """K for 'auto' on `backend` (jax.default_backend()) for a model of `model_family`."""
  if backend == "cpu":
    return AUTO_STEPS_PER_CALL["cpu"].get(model_family, 1)
  return AUTO_STEPS_PER_CALL["accelerator"]


def resolve_steps_per_call(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config`, or a copy whose train.steps_per_call 'auto' is the backend's K."""
  if config.train.steps_per_call != AUTO:
    return config
  resolved = copy.deepcopy(config)
  resolved.train.steps_per_call = auto_steps_per_call(jax.default_backend(),
                                                      config.model.family)
  return resolved
