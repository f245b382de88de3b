"""The evaluator contract and the registry of evaluator types.

An evaluator is built once per run from its `config.evals.<name>` entry and the run's data
access (`EvalContext`), then called as `run(params) -> {metric: value}` at its cadence and
at the end. Types are registered by name with `@register('type')`; the type's settings and
their defaults are listed in `configs.EVALUATOR_SETTINGS` (so configs stay free of jax).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import ml_collections

from mlvae_jax import configs
from mlvae_jax.evaluation.context import EvalContext


class Evaluator:
  """Base of every evaluator type.

  `on_mesh = False` (the default): run on process 0 only, with a host (numpy) copy of the
  parameters. `on_mesh = True`: run by every process on the replicated parameters as the
  train state holds them (for protocols that shard batches over the mesh, like the ELBO).
  `metric_names`, when an instance knows them before running, lets keep-best be checked
  before training.
  """

  on_mesh: bool = False
  metric_names: tuple[str, ...] = ()

  def __init__(self, ctx: EvalContext, settings: ml_collections.ConfigDict):
    self.ctx = ctx
    self.settings = settings

  def run(self, params: Any) -> dict[str, float]:
    raise NotImplementedError(f"{type(self).__name__} must define run(params)")


EVALUATORS: dict[str, type[Evaluator]] = {}
E = TypeVar("E", bound=type[Evaluator])


def register(type_name: str) -> Callable[[E], E]:
  """Class decorator: makes the class the evaluator of `config.evals.<name>.type=type_name`."""

  def add(cls: E) -> E:
    if type_name not in configs.EVALUATOR_SETTINGS:
      raise ValueError(
          f"evaluator type {type_name!r} has no settings in configs.EVALUATOR_SETTINGS; add "
          "an entry with the defaults of its settings ({} if it has none)"
      )
    if type_name in EVALUATORS:
      raise ValueError(f"evaluator type {type_name!r} is registered twice")
    EVALUATORS[type_name] = cls
    return cls

  return add
