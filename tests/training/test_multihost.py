"""Two local processes with 4 CPU devices each: they train in lockstep to the result of one
process with 8 devices fed the same global batches, resume bit for bit after an
interruption, and their checkpoint is refused, untouched, by a run with another process
count."""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mlvae_jax import data as data_lib
from mlvae_jax.training.feed import host as feed_host
from mlvae_jax import train
from tests.test_launch import ROOT, SMOKE, run_launch, snapshot
from tests.training.test_train import PARITY_RTOL, losses, params_at, smoke_config

PROCESSES = 2
# Each process draws whole groups from its half of the small digits validation split.
# The host path: its batches are the same for any process count (layouts drawn on the devices
# are per process shard, so a resident split's batches change with the process count).
OVERRIDES = {"train.num_steps": 4, "train.log_every": 1, "data.group_size": 2,
             "data.num_groups": 32, "data.device_resident": "off"}
# What the coordinator (process 0) prints when its port was taken between `_free_port`
# choosing it and the coordinator binding it; the launch is then retried on another port.
PORT_TAKEN = "Failed to add port"
ATTEMPTS = 3
TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("", 0))
    return s.getsockname()[1]


def run_processes(workdir: pathlib.Path, logs: pathlib.Path, count: int = PROCESSES,
                  devices: int = 4) -> list[tuple[int, str]]:
  """(exit status, output) of each of `count` launch.py processes training the smoke config
  in `workdir`. When one fails the others are stopped rather than left waiting for it."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  overrides = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
  logs.mkdir(parents=True, exist_ok=True)
  for attempt in range(ATTEMPTS):
    port = _free_port()
    paths = [logs / f"attempt{attempt}-process{i}.log" for i in range(count)]
    processes = []
    for i, path in enumerate(paths):
      with open(path, "w") as log:
        processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "launch.py"), SMOKE, f"--workdir={workdir}",
             f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={count}",
             f"--process_id={i}", *overrides],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
      if any(p.poll() not in (None, 0) for p in processes):
        time.sleep(5)  # let the others report what they saw, then stop them
        break
      time.sleep(0.5)
    for p in processes:
      if p.poll() is None:
        p.kill()
      p.wait()
    results = [(p.returncode, path.read_text()) for p, path in zip(processes, paths)]
    if not any(PORT_TAKEN in output for _, output in results):
      return results
  raise AssertionError(f"the coordinator's port was taken {ATTEMPTS} times running; see {logs}")


class _GlobalBatches:
  """What the processes of a multi-process run feed together, made in one process: each
  process's shard batch, concatenated in process order (as the global array holds them)."""

  def __init__(self, config, split, num_epochs=None):
    self.parts = [data_lib.make_batch_iterator(config.data, split, seed=config.seed, process_index=p,
                                               process_count=PROCESSES, num_epochs=num_epochs)
                  for p in range(PROCESSES)]

  def __iter__(self):
    return self

  def __next__(self):
    batches = [next(part) for part in self.parts]
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}

  def get_state(self):
    return [part.get_state() for part in self.parts]

  def set_state(self, states):
    for part, state in zip(self.parts, states):
      part.set_state(state)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
  """A finished 4-step run of two processes (checkpoints at steps 2 and 4)."""
  workdir = tmp_path_factory.mktemp("two") / "run"
  results = run_processes(workdir, workdir.parent / "logs")
  assert [code for code, _ in results] == [0] * PROCESSES, results[-1][1][-3000:]
  return workdir


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_process_with_eight_devices(two_process_run, tmp_path, monkeypatch):
  config = smoke_config(**OVERRIDES)  # the host path reads make_iterator
  monkeypatch.setattr(feed_host, "make_iterator", _GlobalBatches)  # the trainer's batches only
  train.train_and_evaluate(config, str(tmp_path / "one"))

  two = losses(two_process_run)
  assert sorted(two) == [1, 2, 3, 4]
  one = losses(tmp_path / "one")
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)],
                             rtol=PARITY_RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_at(two_process_run, config), params_at(tmp_path / "one", config))
  saved = json.loads((two_process_run / "checkpoints" / "4" / "data_iter" / "metadata").read_text())
  assert len(saved["processes"]) == PROCESSES


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_resume_bit_for_bit(two_process_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(two_process_run, workdir)
  shutil.rmtree(workdir / "checkpoints" / "4")  # as if both were stopped after step 2's save
  results = run_processes(workdir, tmp_path / "logs")
  assert [code for code, _ in results] == [0] * PROCESSES, results[-1][1][-3000:]
  config = smoke_config(**OVERRIDES)
  jax.tree.map(np.testing.assert_array_equal, params_at(workdir, config, 4),
               params_at(two_process_run, config, 4))
  assert losses(workdir) == losses(two_process_run)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_one_process_refuses_to_resume_a_two_process_checkpoint(two_process_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(two_process_run, workdir)
  shutil.rmtree(workdir / "checkpoints" / "4")
  before = snapshot(workdir / "checkpoints")
  result = run_launch(SMOKE, f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in OVERRIDES.items()))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("launch.py: error: checkpoint "), result.stderr
  assert "written by 2 processes and this run has 1" in result.stderr
  assert snapshot(workdir / "checkpoints") == before  # nothing moved aside or overwritten
