"""The evaluators of a run, built from `config.evals` and run at their cadence.

`Evaluators(config, setup, workdir)` checks every entry (known type, exactly its settings, a
split the data can give) and keep-best (it must name a metric of one of them) before any
training; calling it is the training loop's evaluation hook; `run` evaluates given
parameters at once (the end of training, `--mode=eval`); `write` records a final evaluation
in WORKDIR/eval/ (metrics.json, report.md beside the evaluators' pictures).

Pictures come at the cadence of the evaluator that draws them (its `every`): an evaluation
during training draws into eval/pictures/step_<N>/ and adds them to TensorBoard at step N;
the final one draws into eval/ and `write` adds them (pictures.py).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from mlvae_jax.training import checkpoint as checkpoint_lib
from mlvae_jax import configs
from mlvae_jax.training import metrics_writer
from mlvae_jax.evaluation import pictures
from mlvae_jax.evaluation.base import EVALUATORS, Evaluator
from mlvae_jax.evaluation.context import EvalContext
from mlvae_jax.evaluation.report import write_report
from mlvae_jax.training.setup import Setup
from mlvae_jax.training.workdir import SetupError

EVAL_DIR = "eval"
COMMON_SETTINGS = ("type", "split", "every")


def check_entry(name: str, entry: Any) -> type[Evaluator]:
  """The class of `config.evals.<name>`; SetupError if its type or settings are not exactly
  what `configs.evaluator(type)` gives."""
  where = f"config.evals.{name}"
  if not isinstance(entry, ml_collections.ConfigDict) or "type" not in entry:
    raise SetupError(f"{where} must be a ConfigDict with a 'type'; build it with "
                     "mlvae_jax.configs.evaluator(type, split=..., every=...)")
  if entry.type not in EVALUATORS:
    raise SetupError(f"{where}.type={entry.type!r} is unknown; use one of {sorted(EVALUATORS)}")
  expected = {*COMMON_SETTINGS, *configs.EVALUATOR_SETTINGS[entry.type]}
  unknown, missing = sorted(set(entry) - expected), sorted(expected - set(entry))
  if unknown:
    raise SetupError(f"{where} has setting {unknown[0]!r}, which type {entry.type!r} does not "
                     f"know; its settings are {sorted(expected)}")
  if missing:
    raise SetupError(f"{where} lacks setting {missing[0]!r}; build it with "
                     f"mlvae_jax.configs.evaluator({entry.type!r}, ...)")
  if entry.every < 0:
    raise SetupError(f"{where}.every={entry.every} is invalid; use a step count >= 1, or 0 for "
                     "only at the end of the run")
  return EVALUATORS[entry.type]


def host_copy(params: Any) -> Any:
  """Replicated parameters as numpy arrays (every process holds them whole)."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array)
                      else np.asarray(a), params)


class Evaluators:
  """Every evaluator of `config.evals`; those not `on_mesh` exist on process 0 only."""

  def __init__(self, config: ml_collections.ConfigDict, setup: Setup, workdir: str | pathlib.Path):
    self.eval_dir = pathlib.Path(workdir) / EVAL_DIR
    self.tensorboard_dir = pathlib.Path(workdir) / metrics_writer.TENSORBOARD_DIR
    self.ctx = EvalContext(config, setup, self.eval_dir)
    self.every = {name: entry.every for name, entry in config.evals.items()}
    self.evaluators: dict[str, Evaluator] = {}
    self.timings: dict[str, float] = {}
    classes = {name: check_entry(name, entry) for name, entry in config.evals.items()}
    for name, cls in classes.items():
      if cls.on_mesh or jax.process_index() == 0:
        try:
          self.evaluators[name] = cls(self.ctx, configs.resolved_entry(config, name))
        except ValueError as e:  # DataError and the evaluators' own checks name the cause
          raise SetupError(f"config.evals.{name}: {str(e).strip().splitlines()[0]}") from e
    self.best = self._check_keep_best(config, classes)

  def _check_keep_best(self, config: ml_collections.ConfigDict,
                       classes: dict[str, type[Evaluator]]) -> str | None:
    """The evaluator keep-best needs at every checkpoint (None if keep-best is off)."""
    if not config.train.keep_best_metric:
      return None
    metric, _ = checkpoint_lib.best_mode(config.train.keep_best_metric)
    name, _, key = metric.partition("/")
    where = f"config.train.keep_best_metric={config.train.keep_best_metric!r}"
    if name not in classes:
      raise SetupError(f"{where} names no evaluator; use '<evaluator>/<metric>' with one of "
                       f"config.evals: {sorted(classes)}")
    known = self.evaluators[name].metric_names if name in self.evaluators else ()
    if known and key not in known:
      raise SetupError(f"{where}: evaluator {name!r} reports no {key!r}; use one of "
                       f"{[f'{name}/{k}' for k in known]} (optionally prefixed 'min:' or 'max:')")
    if jax.process_count() > 1 and not classes[name].on_mesh:
      raise SetupError(f"{where}: evaluator {name!r} runs on process 0 only; keep-best in a "
                       "multi-process run needs one every process runs (type 'elbo')")
    return name

  def due(self, step: int, *, saving: bool, last: bool) -> list[str]:
    """Evaluators to run at `step`: at their cadence, all at the last step, and keep-best's
    where a checkpoint is saved."""
    return [name for name in self.evaluators
            if last or (saving and name == self.best)
            or (self.every[name] and step % self.every[name] == 0)]

  def __call__(self, step: int, params: Any, *, saving: bool, last: bool) -> dict[str, float]:
    """The training loop's hook (`loop.Evaluate`). Before the last step, pictures go to
    eval/pictures/step_<step>/ and TensorBoard now; the last step's go to eval/ (`write`)."""
    names = self.due(step, saving=saving, last=last)
    if last or not names or jax.process_index() != 0:  # pictures are process 0's
      return self.run(params, names)
    drawn = pictures.step_dir(self.eval_dir, step)
    shutil.rmtree(drawn, ignore_errors=True)  # a resumed run's earlier pictures of this step
    self.ctx.output_dir = drawn
    try:
      metrics = self.run(params, names)
    finally:
      self.ctx.output_dir = self.eval_dir
    pictures.log_pictures(drawn, self.tensorboard_dir, step)
    return metrics

  def run(self, params: Any, names: list[str] | None = None) -> dict[str, float]:
    """`{'<name>/<metric>': value}` of the evaluators `names` (default: all of this process)."""
    names = list(self.evaluators) if names is None else names
    host_params = None
    metrics: dict[str, float] = {}
    for name in names:
      evaluator = self.evaluators[name]
      if not evaluator.on_mesh and host_params is None:
        host_params = host_copy(params)
      start = time.perf_counter()
      values = evaluator.run(params if evaluator.on_mesh else host_params)
      self.timings[name] = time.perf_counter() - start
      metrics.update({f"{name}/{key}": float(value) for key, value in values.items()})
    return metrics

  def write(self, metrics: dict[str, Any], step: int, checkpoint: str | None = None) -> pathlib.Path:
    """Writes eval/metrics.json and eval/report.md of an evaluation at `step` (process 0), and
    adds its pictures to TensorBoard and eval/pictures/step_<step>/."""
    out = self.eval_dir
    out.mkdir(parents=True, exist_ok=True)
    mine = {k: v for k, v in metrics.items() if k.partition("/")[0] in self.every}
    record = {"step": step, **({"checkpoint": checkpoint} if checkpoint else {}), **mine}
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    write_report(out / "report.md", self.ctx.config, mine, self.timings, step, checkpoint)
    pictures.log_pictures(out, self.tensorboard_dir, step)
    pictures.keep_final(out, step)
    return out / "report.md"
