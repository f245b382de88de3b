"""What a config and the visible devices determine before any data or file is touched.

`setup(config)` checks the training fields and builds the mesh, model, loss, optimiser and
the sharded shapes of the train state; the state itself is created already sharded by
jitting `Setup.init` with `out_shardings=Setup.state_shardings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mlvae_jax import data as data_lib
from mlvae_jax.training import nonfinite
from mlvae_jax import objectives
from mlvae_jax.training import sharding
from mlvae_jax.training import step_calls
from mlvae_jax.training import workdir as workdir_lib
from mlvae_jax.config_helpers import get_path
from mlvae_jax.training.feed import resident
from mlvae_jax.models import build_model
from mlvae_jax.training.workdir import SetupError

SCHEDULES = ("constant", "cosine")
# loss_fn(params, batch, rng, step=None) -> (loss, metrics); `step` drives the KL warm-up.
LossFn = Callable[..., tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `rng` is raw key data (uint32) so orbax saves it as an array."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def make_schedule(optim_config: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Learning rate per step: linear warmup, then constant or cosine decay to 0 at num_steps."""
  lr, warmup = optim_config.learning_rate, optim_config.warmup_steps
  if optim_config.schedule == "constant":
    main = optax.constant_schedule(lr)
  else:
    main = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(
    optim_config: ml_collections.ConfigDict, num_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Adam on the schedule (AdamW, decoupled decay, when optim.weight_decay > 0), after
  optional global-norm clipping. Plain Adam without decay keeps older checkpoints'
  optimizer state restorable."""
  schedule = make_schedule(optim_config, num_steps)
  decay = optim_config.weight_decay
  adam = optax.adamw(schedule, weight_decay=decay) if decay > 0 else optax.adam(schedule)
  if optim_config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(optim_config.grad_clip_norm), adam), schedule
  return adam, schedule


def init_state(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    observation_shape: tuple[int, ...],
    seed: int,
) -> Callable[[], TrainState]:
  """A function creating the initial state: jit it with out_shardings to create it sharded."""

  def init() -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.key(seed))
    x = jnp.zeros((1, *observation_shape), jnp.float32)
    params = model.init({"params": init_rng}, x)["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(train_rng),
    )

  return init


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings wanted now (the target of a restore)."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a config and the visible devices determine, before any data or file is touched."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: flax.linen.Module
  observation_shape: tuple[int, ...]
  loss_fn: LossFn
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  init: Callable[[], TrainState]
  state_shardings: Any  # a TrainState of NamedShardings
  abstract_state: Any  # a TrainState of ShapeDtypeStructs with those shardings

  @property
  def batch_sharding(self) -> jax.sharding.NamedSharding:
    return sharding.batch_sharding(self.mesh)

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return sharding.replicated(self.mesh)


def setup(config: ml_collections.ConfigDict) -> Setup:
  """Checks `config` against the devices and builds model, loss, optimiser and state shapes.

  Raises SetupError (one line) for any bad value, so callers fail before writing anything.
  """
  check_config(config)
  config = step_calls.resolve_steps_per_call(config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.data.batch_size, mesh)
  try:
    observation_shape = tuple(data_lib.observation_shape(config.data))
    model = build_model(config.model, observation_shape)
    loss_fn = objectives.make_loss_fn(model, config)
  except (ValueError, KeyError) as e:  # the builders' messages name the bad config field
    raise SetupError(str(e).strip().splitlines()[0]) from e
  tx, schedule = make_optimizer(config.optim, config.train.num_steps)
  init = init_state(model, tx, observation_shape, config.seed)
  abstract = jax.eval_shape(init)
  shardings = sharding.replicate_tree(abstract, mesh)
  return Setup(
      config, mesh, model, observation_shape, loss_fn, tx, schedule, init, shardings,
      with_shardings(abstract, shardings),
  )


def check_config(config: ml_collections.ConfigDict) -> None:
  """The training fields' values, checked before anything is built or written."""
  t, o = config.train, config.optim
  checks = [
      (t.num_steps >= 1, "train.num_steps", "a step count >= 1"),
      (t.log_every >= 1, "train.log_every", "a step count >= 1"),
      (t.checkpoint_every >= 1, "train.checkpoint_every", "a step count >= 1"),
      (t.keep_checkpoints >= 1, "train.keep_checkpoints", "a count >= 1"),
      (t.resume in workdir_lib.RESUME_MODES, "train.resume", f"one of {workdir_lib.RESUME_MODES}"),
      (t.on_nonfinite in nonfinite.POLICIES, "train.on_nonfinite", f"one of {nonfinite.POLICIES}"),
      (t.max_nonfinite_in_a_row >= 1, "train.max_nonfinite_in_a_row", "a count >= 1"),
      (t.steps_per_call == step_calls.AUTO or isinstance(t.steps_per_call, int)
       and t.steps_per_call >= 1, "train.steps_per_call", "'auto' or a step count >= 1"),
      (config.data.device_resident in resident.MODES, "data.device_resident",
       f"one of {resident.MODES}"),
      (o.schedule in SCHEDULES, "optim.schedule", f"one of {SCHEDULES}"),
      (o.learning_rate > 0, "optim.learning_rate", "a rate > 0"),
      (0 <= o.warmup_steps, "optim.warmup_steps", "a step count >= 0"),
      (o.grad_clip_norm >= 0, "optim.grad_clip_norm", "a norm >= 0 (0 disables clipping)"),
      (o.weight_decay >= 0, "optim.weight_decay", "a rate >= 0 (0 is plain Adam)"),
      (config.data.batch_size >= 1, "data.batch_size", "a size >= 1"),
      *((config.model[key] >= 1, f"model.{key}", "a size >= 1")
        for key in ("hidden", "content_dim", "style_dim")),
  ]
  for ok, key, expected in checks:
    if not ok:
      raise SetupError(f"config.{key}={get_path(config, key)!r} is invalid; use {expected}")
