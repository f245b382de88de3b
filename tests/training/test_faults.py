"""Fault injection on the digits smoke run: what a preemptible, shared, imperfect machine
does to a run, and what the run does about it.

Signals, kills and concurrent launches hit real `launch.py` processes; the relaunch that
must continue bit for bit, and the faults that need a precise step (NaN), run in-process.
All share one persistent compilation cache, so a relaunch compiles nothing anew (a run's
jitted functions are new objects each time: without it every run here compiles for ~20 s).
"""

import fcntl
import gzip
import io
import json
import os
import pathlib
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.experimental.compilation_cache import compilation_cache

from mlvae_jax.training import checkpoint, loop, metrics_writer, nonfinite, preemption
from mlvae_jax import data, evaluation, inference
from mlvae_jax.training import restore, run_lock
from mlvae_jax import train
from mlvae_jax.data import idx
from mlvae_jax.data.builders import lfw
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.training.setup import TrainState
from mlvae_jax.training.workdir import SetupError
from tests.test_launch import ROOT, SMOKE, snapshot
from tests.training.test_train import smoke_config

# Trajectory of every run here: one device, no evaluation but keep-best's.
BASE = {"mesh.data": 1, "evals.val.every": 0}
_CACHE_OPTIONS = {"jax_persistent_cache_min_compile_time_secs": 0,
                  "jax_persistent_cache_min_entry_size_bytes": -1}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache_dir(tmp_path_factory):
  """One persistent compilation cache for this module's runs, in-process and launched."""
  directory = str(tmp_path_factory.mktemp("jax_cache"))
  names = ("jax_compilation_cache_dir", *_CACHE_OPTIONS)
  previous = {name: getattr(jax.config, name) for name in names}
  environ = {name.upper(): str(value) for name, value in
             {"jax_compilation_cache_dir": directory, **_CACHE_OPTIONS}.items()}
  saved_environ = {name: os.environ.get(name) for name in environ}
  for name, value in {"jax_compilation_cache_dir": directory, **_CACHE_OPTIONS}.items():
    jax.config.update(name, value)
  os.environ.update(environ)
  compilation_cache.reset_cache()
  yield directory
  for name, value in previous.items():
    jax.config.update(name, value)
  for name, value in saved_environ.items():
    if value is None:
      os.environ.pop(name)
    else:
      os.environ[name] = value
  compilation_cache.reset_cache()


def config_of(**overrides) -> ml_collections.ConfigDict:
  return smoke_config(**{**BASE, **overrides})


def flags_of(**overrides) -> list[str]:
  return [f"--config.{key}={value}" for key, value in {**BASE, **overrides}.items()]


def start_launch(workdir, *args: str) -> subprocess.Popen:
  """`launch.py` on the smoke config, running in the background on one CPU device."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  return subprocess.Popen(
      [sys.executable, str(ROOT / "launch.py"), SMOKE, f"--workdir={workdir}", *args],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, list[str]]:
  """(exit status, stderr lines) of a launched run."""
  _, stderr = process.communicate(timeout=timeout)
  return process.returncode, stderr.strip().splitlines()


def wait_for(condition, what: str, timeout: float = 180) -> None:
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.05)


def steps_saved(workdir) -> list[int]:
  directory = pathlib.Path(workdir) / "checkpoints"
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def params_at(workdir, config, step):
  state, restored, _ = restore.restore_state(config, str(workdir), step)
  assert restored == step
  return jax.device_get(state)


def assert_same_state(workdir, reference, config, step) -> None:
  """Parameters, optimiser state, step and rng of checkpoint `step` equal bit for bit."""
  jax.tree.map(np.testing.assert_array_equal, params_at(workdir, config, step),
               params_at(reference, config, step))


def reference_run(tmp_path, num_steps: int, **overrides) -> pathlib.Path:
  """An uninterrupted in-process run of `num_steps` steps, saved at its last step."""
  workdir = tmp_path / f"reference_{num_steps}"
  train.train_and_evaluate(config_of(**{"train.num_steps": num_steps, **overrides}), str(workdir))
  return workdir


def train_steps_logged(workdir) -> list[int]:
  return [r["step"] for r in metrics_writer.read_metrics(str(workdir)) if "train/loss" in r]


# --- Preemption: SIGTERM, SIGINT, SIGKILL --------------------------------------------------

ENDLESS = {"train.num_steps": 10**6, "train.log_every": 3, "train.checkpoint_every": 10**6}


def assert_stopped_then_continues(tmp_path, process, signal_name: str, overrides) -> int:
  """The launch in tmp_path/run exited 75 with one line naming the step it stopped at, whose
  checkpoint and metrics are there; relaunched for two more steps in-process, the run equals
  an uninterrupted one bit for bit. Returns the step."""
  workdir = tmp_path / "run"
  status, lines = finish(process)
  assert status == preemption.RESUMABLE_EXIT_CODE, lines
  match = re.fullmatch(rf"launch\.py: stopped by {signal_name} at step (\d+); checkpoint \1 is "
                       r"saved in \S+; run the same command again to resume \(exit status 75\)",
                       lines[-1])
  assert match and not any("Traceback" in line or "KeyboardInterrupt" in line
                           for line in lines), lines
  step = int(match.group(1))
  assert steps_saved(workdir)[-1] == step and train_steps_logged(workdir)[-1] == step
  config = config_of(**{**overrides, "train.num_steps": step + 2})
  train.train_and_evaluate(config, str(workdir))
  assert_same_state(workdir, reference_run(tmp_path, step + 2), config, step + 2)
  return step


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])  # a scheduler's stop; a closed terminal
def test_a_stop_signal_saves_the_step_it_arrives_at_and_the_relaunch_continues_bit_for_bit(
    tmp_path, name):
  workdir = tmp_path / "run"
  process = start_launch(workdir, *flags_of(**ENDLESS))
  wait_for(lambda: train_steps_logged(workdir), "the first logged steps")
  process.send_signal(getattr(signal, name))
  stopped_at = assert_stopped_then_continues(tmp_path, process, name, ENDLESS)
  assert steps_saved(workdir) == [stopped_at, stopped_at + 2]  # the stop's, the relaunch's last


@pytest.mark.slow
def test_sigint_twice_while_saving_every_step_commits_the_stop_checkpoint(tmp_path):
  workdir = tmp_path / "run"
  every_step = {**ENDLESS, "train.checkpoint_every": 1, "train.keep_checkpoints": 2}
  process = start_launch(workdir, *flags_of(**every_step))
  wait_for(lambda: len(steps_saved(workdir)) >= 2, "two checkpoints")
  process.send_signal(signal.SIGINT)  # lands in or between saves: every step saves
  time.sleep(0.05)
  process.send_signal(signal.SIGINT)  # a second Ctrl-C while the stop saves
  assert_stopped_then_continues(tmp_path, process, "SIGINT", every_step)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigterm_to_one_of_two_processes_stops_both_at_one_saved_step(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  # One device per process; each process draws whole groups from its half of the data.
  two_hosts = {**ENDLESS, "mesh.data": 2, "data.group_size": 2, "data.num_groups": 32}
  processes = [start_launch(tmp_path, f"--coordinator_address=127.0.0.1:{port}",
                            "--num_processes=2", f"--process_id={i}", *flags_of(**two_hosts))
               for i in range(2)]
  try:
    wait_for(lambda: train_steps_logged(tmp_path) or any(p.poll() is not None for p in processes),
             "the first logged steps")
    processes[1].send_signal(signal.SIGTERM)  # a preemption notice reaches one host
    results = [finish(process) for process in processes]
  finally:
    for process in processes:
      process.kill()
  stops = [re.search(r"stopped by SIGTERM at step (\d+)", lines[-1]) for _, lines in results]
  assert [status for status, _ in results] == [preemption.RESUMABLE_EXIT_CODE] * 2, results
  assert all(stops) and stops[0].group(1) == stops[1].group(1), results
  step = int(stops[0].group(1))
  assert steps_saved(tmp_path) == [step] and train_steps_logged(tmp_path)[-1] == step


@pytest.mark.slow
def test_sigkill_at_random_moments_then_the_relaunch_continues_bit_for_bit(tmp_path):
  """Saving and rotating every step, so most kills land in a save or a deletion."""
  workdir = tmp_path / "run"
  churn = {"train.num_steps": 40, "train.log_every": 5, "train.checkpoint_every": 1,
           "train.keep_checkpoints": 1, "train.keep_best_metric": ""}
  rng = random.Random(8)
  for attempt in range(3):
    before = max(steps_saved(workdir), default=0)
    process = start_launch(workdir, *flags_of(**churn))
    wait_for(lambda: max(steps_saved(workdir), default=0) > before or process.poll() is not None,
             "a new checkpoint")
    time.sleep(rng.uniform(0.0, 1.0))
    process.kill()
    process.communicate()
  config = config_of(**churn)
  train.train_and_evaluate(config, str(workdir))
  assert_same_state(workdir, reference_run(tmp_path, 40), config, 40)
  logged = train_steps_logged(workdir)
  assert logged == sorted(set(logged)) and logged[-1] == 40  # one record per step, in order
  assert not (workdir / "checkpoints" / "deleting").exists()
  assert [p.name for p in (workdir / "checkpoints").iterdir()] == ["40"]


def test_stop_signals_set_a_flag_and_later_ones_change_nothing():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopSignals() as signals:
    assert not signals.reached(1)
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)  # a second signal: the stop is already under way
    assert signals.reached(2) and signals.signal_name == "SIGINT"
  assert signal.getsignal(signal.SIGTERM) is before


# --- Non-finite loss or gradient ------------------------------------------------------------

def poisoned_from(first_bad: int):
  """loop.make_train_step whose steps from `first_bad` on diverge: NaN loss and parameters."""
  original = loop.make_train_step

  def make_train_step(*args):
    inner = original(*args)

    def step(state, batch):
      new_state, metrics = inner(state, batch)
      poison = jnp.where(new_state.step >= first_bad, jnp.nan, 1.0)
      params = jax.tree.map(lambda p: p * poison, new_state.params)
      return new_state.replace(params=params), dict(metrics, loss=metrics["loss"] * poison)

    return step

  return make_train_step


NAN_RUN = {"train.num_steps": 12, "train.log_every": 2, "train.checkpoint_every": 2,
           "train.keep_checkpoints": 1}


def test_stop_policy_ends_at_the_next_boundary_naming_the_step_and_the_good_checkpoint(
    tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "make_train_step", poisoned_from(5))
  config = config_of(**NAN_RUN)
  with pytest.raises(nonfinite.NonFiniteError) as error:
    train.train_and_evaluate(config, str(tmp_path))
  assert re.fullmatch(r"non-finite loss or gradient at step 5 \(config.train.on_nonfinite="
                      r"'stop'\); the run stopped without saving; last good checkpoint: step 4 in "
                      r"\S+; .*", str(error.value))
  assert steps_saved(tmp_path)[-1] == 4  # nothing saved after the first non-finite step
  assert not (tmp_path / "final_metrics.json").exists()
  state, step, _ = restore.restore_state(config, str(tmp_path))
  assert step in (2, 4) and not nonfinite.nonfinite_paths(state)


def test_skip_policy_drops_updates_counts_them_and_stops_after_n_in_a_row(tmp_path, monkeypatch):
  monkeypatch.setattr(loop, "make_train_step", poisoned_from(5))
  config = config_of(**{**NAN_RUN, "train.keep_checkpoints": 2, "train.on_nonfinite": "skip",
                        "train.max_nonfinite_in_a_row": 3})
  with pytest.raises(nonfinite.NonFiniteError, match=r"^3 non-finite updates in a row up to step "
                     r"7, all skipped \(config.train.max_nonfinite_in_a_row=3\); .* last good "
                     r"checkpoint: step 6 in "):
    train.train_and_evaluate(config, str(tmp_path))
  saved = {step: params_at(tmp_path, config, step) for step in (4, 6)}
  jax.tree.map(np.testing.assert_array_equal, saved[4].params, saved[6].params)  # 5, 6 dropped
  jax.tree.map(np.testing.assert_array_equal, saved[4].opt_state, saved[6].opt_state)
  assert int(saved[6].step) == 6
  dropped = {r["step"]: r["train/nonfinite"] for r in metrics_writer.read_metrics(str(tmp_path))
             if "train/nonfinite" in r}
  assert dropped == {2: 0.0, 4: 0.0, 6: 1.0, 8: 1.0}  # the window that ended the run is logged


def test_guarded_step_drops_a_non_finite_update_and_counts_it_on_device():
  def fake_step(state, batch):
    new = state.replace(step=state.step + 1, params=state.params + batch)
    return new, {"loss": jnp.sum(new.params), "grad_norm": jnp.float32(1.0)}

  state = TrainState(jnp.int32(0), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2, jnp.uint32))
  train_config = ml_collections.ConfigDict({"on_nonfinite": "skip", "max_nonfinite_in_a_row": 2})
  step = jax.jit(nonfinite.guard_step(fake_step, train_config))
  health = nonfinite.Health.initial()
  state, health, metrics = step(state, health, jnp.ones(2))
  state, health, metrics = step(state, health, jnp.array([jnp.inf, 1.0]))
  np.testing.assert_array_equal(state.params, [1.0, 1.0])  # the update was dropped
  assert (int(state.step), int(health.in_a_row), float(metrics["nonfinite"])) == (2, 1, 1.0)
  nonfinite.check(health, train_config, "step 0")  # one in a row: the run goes on
  state, health, _ = step(state, health, jnp.array([jnp.nan, 0.0]))
  assert int(health.stopped_at) == 3
  with pytest.raises(nonfinite.NonFiniteError, match="2 non-finite updates in a row up to step 3"):
    nonfinite.check(health, train_config, "step 0")


def test_checkpoints_refuse_non_finite_states_and_metrics_never_make_them_best(tmp_path):
  train_config = ml_collections.ConfigDict({"keep_checkpoints": 1, "keep_best_metric": "val/elbo"})
  checkpoints = checkpoint.Checkpoints(str(tmp_path), train_config)
  config = ml_collections.ConfigDict({"seed": 0})
  good = {"w": jnp.ones(3)}
  checkpoints.save(1, good, {}, config, {"val/elbo": -10.0})
  checkpoints.save(2, good, {}, config, {"val/elbo": float("nan")})
  checkpoints.save(3, good, {}, config, None)  # e.g. a preemption save: no evaluation
  with pytest.raises(nonfinite.NonFiniteError, match=r"checkpoint 4 was not saved: 'w' holds NaN "
                     r"or infinite values; the last good checkpoint is step 3 in "):
    checkpoints.save(4, {"w": jnp.array([1.0, jnp.inf, 0.0])}, {}, config, None)
  checkpoints.close()
  reader = checkpoint.Checkpoints(str(tmp_path), train_config, read_only=True)
  assert reader.steps() == [1, 3] and reader.best_step() == 1


def test_evaluation_refuses_non_finite_parameters_in_one_line(tmp_path, monkeypatch):
  config = config_of()
  train.train_and_evaluate(config, str(tmp_path))
  checkpoints = checkpoint.Checkpoints(str(tmp_path), config.train)
  state, _ = checkpoints.restore(4, setup_lib.setup(config).abstract_state)
  monkeypatch.setattr(nonfinite, "nonfinite_paths", lambda tree: [])  # as older versions saved
  checkpoints.save(5, state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params)),
                   {}, config, {"val/elbo": 0.0})
  checkpoints.close()
  monkeypatch.undo()
  with pytest.raises(SetupError, match=r"checkpoint \S+/5 holds non-finite values \(first in "
                     r"'params\.\S+'\): the run had diverged"):
    train.evaluate(config, str(tmp_path))
  with pytest.raises(SetupError, match="holds non-finite values"):
    inference.load(str(tmp_path), step=5)


@pytest.mark.slow
def test_a_huge_learning_rate_stops_the_launch_in_one_line(tmp_path):
  status, lines = finish(start_launch(tmp_path, *flags_of(**{"optim.learning_rate": 1e6,
                                                              "train.num_steps": 200,
                                                              "train.checkpoint_every": 100})))
  assert status == 1 and len(lines) == 1, lines
  assert re.fullmatch(r"launch\.py: error: non-finite loss or gradient at step \d+ .* last good "
                      r"checkpoint: none \(no checkpoint was saved in \S+\); .*", lines[0])
  assert steps_saved(tmp_path) == [] and not (tmp_path / "final_metrics.json").exists()


# --- One writer per workdir -------------------------------------------------------------------

def test_a_second_launch_fails_at_once_naming_the_holder(tmp_path):
  workdir = tmp_path / "run"
  holder = run_lock.RunLock(str(workdir))
  holder.acquire()
  holder.announce()
  before = snapshot(workdir)
  try:
    started = time.monotonic()
    status, lines = finish(start_launch(workdir, *flags_of()))
    assert snapshot(workdir) == before
  finally:
    holder.release()
  assert status == 1 and len(lines) == 1, lines
  assert re.fullmatch(rf"launch\.py: error: workdir {re.escape(str(workdir))} is in use by another "
                      rf"run \(host \S+, pid {os.getpid()}, started \S+\); wait for it to end, "
                      r"stop it, or use another --workdir", lines[0])
  assert time.monotonic() - started < 120  # at once: before any data or compilation work


def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path):
  path = tmp_path / run_lock.LOCK_FILE
  holder = subprocess.Popen(
      [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | "
       "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'{\"host\": \"h\", \"pid\": 1, "
       "\"started\": \"t\"}'); print('held', flush=True); time.sleep(300)", str(path)],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(SetupError, match=r"in use by another run \(host h, pid 1, started t\)"):
    run_lock.RunLock(str(tmp_path)).acquire()
  holder.kill()
  holder.wait()
  lock = run_lock.RunLock(str(tmp_path))
  lock.acquire()  # the kernel dropped the dead holder's lock
  assert path.read_text() == ""  # and its record is gone
  with pytest.raises(SetupError, match="holder not recorded yet"):
    run_lock.RunLock(str(tmp_path)).acquire()
  lock.release()
  with open(path) as f:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


# --- Damaged checkpoints and leftovers --------------------------------------------------------

def _truncate_arrays(step_dir: pathlib.Path) -> None:
  for path in (step_dir / "state" / "d").iterdir():
    with open(path, "r+b") as f:
      f.truncate(path.stat().st_size // 2)


def _garble_arrays(step_dir: pathlib.Path) -> None:
  for path in (step_dir / "state" / "d").iterdir():
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01  # one bit
    path.write_bytes(bytes(content))


def _garble_metadata(step_dir: pathlib.Path) -> None:
  (step_dir / "state" / "_METADATA").write_text("{not json")


def _half_deleted(step_dir: pathlib.Path) -> None:
  """What a kill during an older orbax's in-place deletion left."""
  (step_dir / "_CHECKPOINT_METADATA").unlink()
  shutil.rmtree(step_dir / "config")


@pytest.fixture(scope="module")
def four_steps(tmp_path_factory):
  """A finished smoke run (checkpoints at 2 and 4) and an uninterrupted 6-step reference."""
  root = tmp_path_factory.mktemp("damage")
  train.train_and_evaluate(config_of(), str(root / "run"))
  return root / "run", reference_run(root, 6)


@pytest.mark.parametrize("damage", [_truncate_arrays, _garble_arrays, _garble_metadata,
                                    _half_deleted])
def test_an_unreadable_latest_checkpoint_is_moved_aside_and_the_run_resumes_before_it(
    four_steps, tmp_path, capfd, damage):
  finished, reference = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  damage(workdir / "checkpoints" / "4")
  state, step, _ = restore.restore_state(config_of(), str(workdir))  # eval: read-only fallback
  assert step == 2 and (workdir / "checkpoints" / "4").is_dir()
  lines = capfd.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and re.fullmatch(r"checkpoint 4 of \S+ is damaged \(.+\); skipped "
                                          r"\(a training run in this workdir moves it aside\)",
                                          lines[0])
  config = config_of(**{"train.num_steps": 6})
  train.train_and_evaluate(config, str(workdir))
  lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
  moved = re.fullmatch(r"checkpoint 4 of \S+ is damaged \(.+\); moved to (\S+)", lines[0])
  assert moved and len(lines) == 1, lines
  assert pathlib.Path(moved.group(1)).parent == workdir / checkpoint.DAMAGED_DIR
  assert pathlib.Path(moved.group(1)).is_dir()  # nothing deleted
  assert_same_state(workdir, reference, config, 6)
  assert train_steps_logged(workdir) == [2, 4, 6]


def test_leftovers_of_kills_during_save_and_deletion_are_cleaned_up_quietly(
    four_steps, tmp_path, capfd):
  finished, reference = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  partial = workdir / "checkpoints" / "deleting" / "2"  # a kill while deleting a rotated step
  shutil.copytree(workdir / "checkpoints" / "2", partial)
  shutil.rmtree(partial / "state")
  tmp = workdir / "checkpoints" / "6.orbax-checkpoint-tmp-1234567"  # a kill while saving
  shutil.copytree(workdir / "checkpoints" / "4", tmp)
  config = config_of(**{"train.num_steps": 6})
  train.train_and_evaluate(config, str(workdir))
  assert capfd.readouterr().err.strip() == ""
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4", "6"]
  assert_same_state(workdir, reference, config, 6)


def test_relaunching_a_finished_run_reports_the_same_final_metrics(four_steps, tmp_path):
  finished, _ = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  first = json.loads((workdir / "final_metrics.json").read_text())
  again = train.train_and_evaluate(config_of(), str(workdir))
  assert sorted(again) == sorted(first)
  assert {k: again[k] for k in again if k.startswith(("train/", "perf/"))} == {
      k: first[k] for k in first if k.startswith(("train/", "perf/"))}


# --- Bad input files ----------------------------------------------------------------------------

def _mnist_files(directory: pathlib.Path) -> pathlib.Path:
  """The four MNIST file names, gzip-compressed (train images are read first); their content
  does not matter: a corrupted file fails before it is parsed."""
  directory.mkdir()
  payload = bytes((i * i) % 251 for i in range(4096))  # compressible: Huffman-coded blocks
  for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte"):
    (directory / f"{name}.gz").write_bytes(gzip.compress(payload))
  return directory


def _flip_bytes(path: pathlib.Path, at: int = 20) -> None:
  content = bytearray(path.read_bytes())
  for i in range(at, at + 8):
    content[i] ^= 0x5A
  path.write_bytes(bytes(content))


def _truncate(path: pathlib.Path) -> None:
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_crc(path: pathlib.Path) -> None:
  content = bytearray(path.read_bytes())
  content[-8] ^= 0xFF
  path.write_bytes(bytes(content))


@pytest.mark.parametrize("corrupt, cause", [
    (_flip_bytes, "while decompressing data"), (_truncate, "end-of-stream"), (_bad_crc, "CRC"),
])
def test_a_corrupted_gz_file_is_a_data_error_naming_it(tmp_path, corrupt, cause):
  manual = _mnist_files(tmp_path / "manual")
  bad = manual / "train-images-idx3-ubyte.gz"
  corrupt(bad)
  with pytest.raises(data.DataError, match=rf"^cannot read {re.escape(str(bad))}: .*{cause}.*; "
                     "replace it with a fresh copy"):
    idx.read_idx(bad, expected_shape=(60000, 28, 28))
  config = ml_collections.ConfigDict(dict(config_of().data.to_dict(), name="mnist",
                                          manual_dir=str(manual), data_dir=str(tmp_path / "tfds")))
  with pytest.raises(data.DataError, match=f"cannot read {re.escape(str(bad))}"):
    data.load_split(config, "train")


@pytest.mark.parametrize("corrupt, cause", [
    (lambda path: _flip_bytes(path, at=len(path.read_bytes()) // 2), "at lfw/Ann_Lee/Ann_Lee_"),
    (_truncate, "at lfw/"),
])
def test_a_corrupted_lfw_archive_is_a_data_error_naming_it(tmp_path, corrupt, cause):
  image = pytest.importorskip("PIL.Image")
  manual = tmp_path / "manual"
  manual.mkdir()
  archive = manual / lfw.ARCHIVE
  with tarfile.open(archive, "w:gz") as tar:
    for i in range(4):
      buffer = io.BytesIO()
      image.fromarray(np.full((250, 250, 3), 40 * i, np.uint8)).save(buffer, format="PNG")
      info = tarfile.TarInfo(f"lfw/Ann_Lee/Ann_Lee_{i:04d}.jpg")
      info.size = buffer.tell()
      buffer.seek(0)
      tar.addfile(info, buffer)
  corrupt(archive)
  builder = tfds.builder("mlvae_lfw", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(data.DataError, match=rf"^cannot read {re.escape(str(archive))} \({cause}"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))


@pytest.mark.slow
def test_a_launch_on_a_corrupted_gz_fails_in_one_line(tmp_path):
  manual = _mnist_files(tmp_path / "manual")
  _flip_bytes(manual / "train-images-idx3-ubyte.gz")
  process = subprocess.run(
      [sys.executable, str(ROOT / "launch.py"), "--config=experiments/mnist.py:smoke",
       f"--workdir={tmp_path / 'run'}", f"--config.data.manual_dir={manual}",
       f"--config.data.data_dir={tmp_path / 'tfds'}"],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=240)
  lines = process.stderr.strip().splitlines()
  assert process.returncode == 1 and len(lines) == 1, lines
  assert re.search(r"cannot read \S+train-images-idx3-ubyte.gz: Error -3 while decompressing",
                   lines[0])
  assert not (tmp_path / "run").exists()


# --- Failed saves ---------------------------------------------------------------------------

def _limit_file_size(limit: int) -> None:
  """What a full disk does to a write (EFBIG rather than ENOSPC), for any user: files can
  grow to `limit` bytes (Python ignores SIGXFSZ, so the write fails instead)."""
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_save_that_cannot_be_written_is_one_error_and_earlier_checkpoints_stay_intact(
    tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path), ml_collections.ConfigDict(
      {"keep_checkpoints": 3, "keep_best_metric": ""}))
  config = ml_collections.ConfigDict({"seed": 0})
  first = {"w": jax.random.normal(jax.random.key(0), (64,))}
  checkpoints.save(1, first, {}, config)
  checkpoints.finish_pending()
  big = {"w": jax.random.normal(jax.random.key(1), (2**16,))}  # 256 KiB that do not compress
  unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
  try:
    _limit_file_size(64 * 1024)
    checkpoints.save(2, big, {}, config)
    with pytest.raises(checkpoint.SaveError, match=r"^checkpoint 2 could not be written to \S+ "
                       r"\(.+\); the run stops here, earlier checkpoints are intact: free disk "
                       r"space or fix its permissions, then run the same command again$"):
      checkpoints.finish_pending()
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
  checkpoints.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]  # the failed save's leftovers go
  reader = checkpoint.Checkpoints(str(tmp_path), read_only=True)
  assert reader.steps() == [1] and not reader.damaged
  restored, _ = reader.restore(1, jax.eval_shape(lambda: first), with_data=False)
  np.testing.assert_array_equal(restored["w"], first["w"])


def test_a_checkpoints_directory_that_cannot_be_written_fails_the_save_at_once(tmp_path):
  checkpoints = checkpoint.Checkpoints(str(tmp_path), ml_collections.ConfigDict(
      {"keep_checkpoints": 3, "keep_best_metric": ""}))
  checkpoints.close()
  directory = tmp_path / "checkpoints"
  directory.chmod(0o500)
  try:
    if os.access(directory, os.W_OK):
      pytest.skip("this user writes anywhere (root): a read-only directory cannot be made")
    writer = checkpoint.Checkpoints(str(tmp_path), ml_collections.ConfigDict(
        {"keep_checkpoints": 3, "keep_best_metric": ""}))
    started = time.monotonic()
    with pytest.raises(checkpoint.SaveError, match=r"^checkpoint 1 could not be written .+"
                       r"PermissionError"):
      writer.save(1, {"w": jnp.ones(3)}, {}, ml_collections.ConfigDict({"seed": 0}))
    assert time.monotonic() - started < 30  # orbax alone waits 5 minutes in a barrier
  finally:
    directory.chmod(0o700)


@pytest.mark.slow
def test_a_full_disk_ends_the_launch_in_one_line_within_one_interval(four_steps, tmp_path):
  finished, _ = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_PLATFORMS="cpu")
  env.pop("JAX_COMPILATION_CACHE_DIR")  # this module's cache would hit the limit too
  process = subprocess.run(
      [sys.executable, str(ROOT / "launch.py"), SMOKE, f"--workdir={workdir}",
       *flags_of(**{"train.num_steps": 40})],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      preexec_fn=lambda: _limit_file_size(20_000))  # below one array file of the smoke run
  lines = process.stderr.strip().splitlines()
  assert process.returncode == 1 and len(lines) == 1, process.stderr
  assert re.fullmatch(r"launch\.py: error: checkpoint 6 could not be written to \S+ \(.+\); the "
                      r"run stops here, earlier checkpoints are intact: .+", lines[0]), lines
  assert train_steps_logged(workdir)[-1] <= 6 + 2  # within one checkpoint interval
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)
  assert reader.steps() == [2, 4] and not reader.damaged


# --- The final step, SIGHUP, readers beside a running training ------------------------------

class _RecordingSaved:
  """The run's evaluators, noting which checkpoints are on disk when the last step's run."""

  def __init__(self, evaluators, workdir):
    self.evaluators, self.workdir, self.saved_at_last = evaluators, workdir, None

  def due(self, step, *, saving, last):
    return self.evaluators.due(step, saving=saving, last=last)

  def __call__(self, step, params, *, saving, last):
    if last:
      self.saved_at_last = checkpoint.Checkpoints(self.workdir, read_only=True).steps()
    return self.evaluators(step, params, saving=saving, last=last)


def test_the_final_step_is_saved_before_the_end_of_run_evaluators(tmp_path):
  config = config_of(**{"evals.val.every": 2})
  setup = setup_lib.setup(config)
  evaluate = _RecordingSaved(evaluation.Evaluators(config, setup, str(tmp_path)), str(tmp_path))
  loop.train(setup, str(tmp_path), evaluate)
  assert evaluate.saved_at_last[-1] == config.train.num_steps


def test_sighup_stops_a_run_like_sigterm():
  with preemption.StopSignals() as signals:
    os.kill(os.getpid(), signal.SIGHUP)  # a closed terminal or ssh session
    assert signals.reached(1) and signals.signal_name == "SIGHUP"


def test_a_reader_passes_over_a_checkpoint_rotated_away_while_it_reads(four_steps, tmp_path,
                                                                       capfd):
  finished, _ = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  setup = setup_lib.setup(config_of())
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)
  shutil.rmtree(workdir / "checkpoints" / "4")  # a running training's rotation
  step, state, _ = reader.restore_readable(setup.abstract_state, preferred=[4], with_data=False)
  assert step == 2 and capfd.readouterr().err == ""  # not damaged: no report, no advice
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state),
               params_at(finished, config_of(), 2))


def test_eval_of_a_workdir_a_run_holds_reports_aside_and_leaves_its_eval_alone(
    four_steps, tmp_path, capsys):
  finished, _ = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  report = (workdir / "eval" / "report.md").read_bytes()
  lock = run_lock.RunLock(str(workdir))
  lock.acquire()
  lock.announce()
  try:
    metrics = train.evaluate(config_of(), str(workdir))
  finally:
    lock.release()
  out = capsys.readouterr().out
  assert re.search(rf"workdir \S+ is being trained \(host \S+, pid {os.getpid()}, started \S+\): "
                   r"this report is in \S+, its eval/ is the run's", out), out
  aside = workdir / train.EVAL_WHILE_TRAINING_DIR / str(metrics["step"]) / "eval" / "report.md"
  assert aside.is_file() and (workdir / "eval" / "report.md").read_bytes() == report
  assert run_lock.holder(str(workdir)) is None


# --- metrics.jsonl ------------------------------------------------------------------------------

def test_a_torn_last_metrics_line_is_dropped_in_one_line(tmp_path, capfd):
  path = tmp_path / metrics_writer.METRICS_FILE
  path.write_text('{"step": 2, "train/loss": 1.5}\n{"step": 4, "train/loss": 1.25}\n'
                  '{"step": 6, "tr')
  assert [r["step"] for r in metrics_writer.read_metrics(str(tmp_path))] == [2, 4]
  writer = metrics_writer.MetricsWriter(str(tmp_path), total_steps=8, start_step=4)
  writer.write(6, {"train/loss": 1.0})
  writer.close()
  assert [r["step"] for r in metrics_writer.read_metrics(str(tmp_path))] == [2, 4, 6]
  lines = capfd.readouterr().err.strip().splitlines()
  assert [line for line in lines if "torn" in line] == [
      f"{path}: the torn last line (a write interrupted) is ignored",
      f"{path}: the torn last line (a write interrupted) is dropped"]


def test_a_reader_beside_a_running_training_skips_a_step_being_completed_quietly(
    four_steps, tmp_path, capfd):
  finished, _ = four_steps
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  (workdir / "checkpoints" / "4" / "integrity.json").unlink()  # committed, record not yet
  lock = run_lock.RunLock(str(workdir))
  lock.acquire()
  try:
    reader = checkpoint.Checkpoints(str(workdir), read_only=True)
    assert reader.steps() == [2] and not reader.damaged
  finally:
    lock.release()
  assert capfd.readouterr().err == ""
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)  # no run: an interrupted save
  assert reader.steps() == [2] and "no integrity.json" in reader.damaged[4]
