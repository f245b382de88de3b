"""Two local processes with 4 CPU devices each train in lockstep to the result of one process
with 8 devices fed the same global batches."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mlvae_jax import data as data_lib
from mlvae_jax import metrics_writer, train
from tests.test_launch import ROOT
from tests.test_train import PARITY_RTOL, params_at, smoke_config

PROCESSES = 2
# Each process draws whole groups from its half of the small digits validation split.
OVERRIDES = {"train.num_steps": 4, "train.log_every": 1, "data.group_size": 2, "data.num_groups": 32}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _GlobalBatches:
  """What the processes of a multi-process run feed together, made in one process: each
  process's shard batch, concatenated in process order (as the global array holds them)."""

  def __init__(self, config, split):
    self.parts = [data_lib.make_batch_iterator(config.data, split, seed=config.seed, process_index=p,
                                               process_count=PROCESSES) for p in range(PROCESSES)]

  def __next__(self):
    batches = [next(part) for part in self.parts]
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}

  def get_state(self):
    return [part.get_state() for part in self.parts]

  def set_state(self, states):
    for part, state in zip(self.parts, states):
      part.set_state(state)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_process_with_eight_devices(tmp_path, monkeypatch):
  workdir = tmp_path / "two"
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  processes = [
      subprocess.Popen(
          [sys.executable, str(ROOT / "launch.py"), "--config=experiments/digits.py:smoke",
           f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
           f"--num_processes={PROCESSES}", f"--process_id={i}", *overrides],
          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(PROCESSES)
  ]
  try:
    outputs = [p.communicate(timeout=240)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
  assert [p.returncode for p in processes] == [0] * PROCESSES, outputs[-1][-3000:]

  config = smoke_config(**OVERRIDES)
  monkeypatch.setattr(train, "_make_iterator", _GlobalBatches)  # the trainer's batches only
  train.train_and_evaluate(config, str(tmp_path / "one"))

  two = metrics_writer.read_metrics(str(workdir))
  one = metrics_writer.read_metrics(str(tmp_path / "one"))
  loss = lambda records: [r["train/loss"] for r in records if "train/loss" in r]  # noqa: E731
  assert len(loss(two)) == 4
  np.testing.assert_allclose(loss(two), loss(one), rtol=PARITY_RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_at(workdir, config), params_at(tmp_path / "one", config))
  saved = json.loads((workdir / "checkpoints" / "4" / "data_iter" / "metadata").read_text())
  assert len(saved["processes"]) == PROCESSES
