"""Orbax checkpoints of a run: train state, data-iterator state and config, saved together.

WORKDIR/checkpoints/<step>/ holds three items: `state` (params, optimiser state, step and
rng, restored onto whatever mesh the caller asks for), `data_iter` (the JSON state of every
process's batch iterator, so a resumed run sees the same batches) and `config`. Reading
never creates or changes anything, so callers can inspect a workdir before deciding to
write to it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mlvae_jax.workdir import SetupError

CHECKPOINT_DIR = "checkpoints"
_MINIMISED_MARKERS = ("loss", "bits", "error", "nll")


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def best_mode(metric: str) -> tuple[str, str]:
  """(metric name, 'min' | 'max'): a 'min:' / 'max:' prefix wins, else losses are minimised."""
  for mode in ("min", "max"):
    if metric.startswith(mode + ":"):
      return metric[len(mode) + 1:], mode
  return metric, "min" if any(m in metric for m in _MINIMISED_MARKERS) else "max"


def _handlers() -> dict[str, ocp.CheckpointHandler]:
  return {
      "state": ocp.StandardCheckpointHandler(),
      "data_iter": ocp.JsonCheckpointHandler(),
      "config": ocp.JsonCheckpointHandler(),
  }


def _options(
    train_config: ml_collections.ConfigDict | None, read_only: bool
) -> ocp.CheckpointManagerOptions:
  """Keep the latest keep_checkpoints, plus the best by keep_best_metric if it is set."""
  keep = train_config.keep_checkpoints if train_config else None
  metric = train_config.keep_best_metric if train_config else ""
  policies = [ocp.checkpoint_managers.LatestN(n=keep)]
  best = {}
  if metric:
    name, mode = best_mode(metric)
    # best_fn also makes orbax store each step's metrics (for BestN and best_step).
    best = dict(best_fn=lambda metrics: metrics[name], best_mode=mode)
    policies.append(
        ocp.checkpoint_managers.BestN(
            get_metric_fn=best["best_fn"],
            reverse=mode == "min",
            n=1,
            keep_checkpoints_without_metrics=False,
        )
    )
  # Reading uses create/cleanup/save_interval off rather than orbax's read_only, which warns
  # on every open; `Checkpoints` never saves or deletes through a reading manager.
  return ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
      create=not read_only,
      cleanup_tmp_directories=not read_only,
      save_interval_steps=0 if read_only else 1,
      **best,
  )


def _leaf_name(path: tuple[Any, ...]) -> str:
  """The dotted name orbax gives a leaf, e.g. 'opt_state.1.0.mu.w'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return ".".join(parts)


def _gather_process_states(state: Mapping[str, Any]) -> list[Any]:
  """Every process's (JSON) iterator state, in process order, on every process."""
  if jax.process_count() == 1:
    return [state]
  encoded = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
  lengths = multihost_utils.process_allgather(np.array([encoded.size], np.int32))
  padded = np.zeros(int(np.max(lengths)), np.uint8)
  padded[: encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)
  return [
      json.loads(bytes(row[: int(n)]).decode())
      for row, n in zip(gathered, np.asarray(lengths).reshape(-1))
  ]


class Checkpoints:
  """The checkpoints of one workdir, kept per `train_config` (config.train).

  With `read_only` nothing is created, deleted or written, even the directory.
  """

  def __init__(
      self,
      workdir: str,
      train_config: ml_collections.ConfigDict | None = None,
      *,
      read_only: bool = False,
  ):
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    if read_only and not os.path.isdir(self.directory):
      self._manager = None
      return
    self._manager = ocp.CheckpointManager(
        self.directory, options=_options(train_config, read_only), item_handlers=_handlers()
    )

  def steps(self) -> list[int]:
    """Steps of the complete checkpoints, ascending (incomplete saves are not listed)."""
    return sorted(self._manager.all_steps()) if self._manager else []

  def saved_config(self, step: int) -> dict[str, Any]:
    """The config dict stored with checkpoint `step`."""
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
        "config"
    ]

  def check_shapes(self, step: int, abstract_state: Any) -> None:
    """Fails with one line naming the first leaf whose stored shape differs from the target."""
    stored = {
        m.name: tuple(m.shape)
        for m in jax.tree.leaves(self._manager.item_metadata(step)["state"].tree)
    }
    leaves, _ = jax.tree_util.tree_flatten_with_path(abstract_state)
    expected = {_leaf_name(path): tuple(leaf.shape) for path, leaf in leaves}
    params_first = lambda name: (not name.startswith("params."), name)  # noqa: E731
    for name in sorted(set(stored) | set(expected), key=params_first):
      if stored.get(name) != expected.get(name):
        raise SetupError(
            f"checkpoint {self.directory}/{step} does not match the config: '{name}' is "
            f"{stored.get(name, 'absent')} there and {expected.get(name, 'absent')} in the "
            "model of this config; restore with the config the run was trained with "
            "(its config.json)"
        )

  def restore(
      self, step: int, abstract_state: Any, with_data: bool = True
  ) -> tuple[Any, Any | None]:
    """(state, this process's iterator state or None) of checkpoint `step`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with the shardings wanted now, so a
    checkpoint saved on 8 devices restores onto 1 (or any mesh) without going through host.
    """
    self.check_shapes(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data:
      items["data_iter"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if not with_data:
      return restored["state"], None
    per_process = restored["data_iter"]["processes"]
    if len(per_process) != jax.process_count():
      raise SetupError(
          f"checkpoint {self.directory}/{step} was written by {len(per_process)} processes and "
          f"this run has {jax.process_count()}; resume with the same number of processes"
      )
    return restored["state"], per_process[jax.process_index()]

  def save(
      self,
      step: int,
      state: Any,
      data_state: Any,
      config: ml_collections.ConfigDict,
      metrics: Mapping[str, float] | None = None,
  ) -> None:
    """Saves all three items (asynchronously; all processes must call it)."""
    if self.read_only:
      raise RuntimeError(f"checkpoints of {self.directory} were opened read-only")
    items = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=ocp.args.JsonSave({"processes": _gather_process_states(data_state)}),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
    )
    self._manager.save(step, args=items, metrics=dict(metrics) if metrics else None, force=True)

  def best_step(self) -> int | None:
    """The step best by keep_best_metric (the latest if none is set); None if none saved."""
    return self._manager.best_step() if self._manager else None

  def close(self) -> None:
    """Waits for pending saves; call before the process exits."""
    if self._manager:
      self._manager.wait_until_finished()
      self._manager.close()
