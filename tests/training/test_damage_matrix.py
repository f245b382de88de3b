"""The damage matrix: every file a real checkpoint holds x five damages x the three readers.

The files are listed from a checkpoint the digits smoke run wrote this session, so a new
orbax layout is covered without editing this test. Each case copies that run, damages one
file of its newest checkpoint (4) and checks that training's resume, `--mode=eval`'s
restore and `inference.load` each say so in one line and fall back to checkpoint 2, with
exactly checkpoint 2's values. One trained run serves every case; the readers run in
process (what launch.py shows is their one-line error; tests/training/test_faults.py
checks the launched exit path).
"""

import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from mlvae_jax import inference, train
from mlvae_jax.training import checkpoint, integrity, loop, restore
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.training.workdir import SetupError
from tests.test_launch import SMOKE, run_launch
from tests.training.test_train import smoke_config

BASE = {"mesh.data": 1, "evals.val.every": 0}


def _truncate_to(size):
  def damage(path: pathlib.Path) -> None:
    with open(path, "r+b") as f:
      f.truncate(size(path.stat().st_size))
  return damage


def _flip_middle(path: pathlib.Path) -> None:
  content = bytearray(path.read_bytes())
  middle = max(0, len(content) // 2 - 8)
  for i in range(middle, min(middle + 16, len(content))):
    content[i] ^= 0xFF
  path.write_bytes(bytes(content))


DAMAGES = {
    "truncated_to_0": _truncate_to(lambda size: 0),
    "truncated_to_100": _truncate_to(lambda size: 100),
    "truncated_to_half": _truncate_to(lambda size: size // 2),
    "16_bytes_flipped": _flip_middle,
    "deleted": os.remove,
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> pathlib.Path:
  """One finished smoke run (checkpoints at 2 and 4), trained once per session."""
  workdir = tmp_path_factory.mktemp("damage_matrix") / "run"
  train.train_and_evaluate(smoke_config(**BASE), str(workdir))
  return workdir


def checkpoint_files(workdir: pathlib.Path, step: int) -> list[str]:
  root = workdir / "checkpoints" / str(step)
  return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def setup():
  return setup_lib.setup(smoke_config(**BASE))


@pytest.fixture(scope="module")
def intact_2(trained, setup):
  """State and data state of the intact checkpoint 2: what every fallback must give."""
  reader = checkpoint.Checkpoints(str(trained), read_only=True)
  return jax.device_get(reader.restore(2, setup.abstract_state))


def _resume(workdir: pathlib.Path, setup, expected, lines) -> None:
  """What a training relaunch does before its first step: plan, open writable, restore."""
  plan = loop.plan(setup, str(workdir))
  checkpoints = checkpoint.Checkpoints(str(workdir), setup.config.train)
  step, state, data_state = checkpoints.restore_readable(
      setup.abstract_state, preferred=[plan.resume_step])
  checkpoints.close()
  moved = re.fullmatch(r"checkpoint 4 of \S+ is damaged \(.+\); moved to (\S+)", lines()[-1])
  assert moved, "no one-line report"
  assert pathlib.Path(moved.group(1)).parent == workdir / checkpoint.DAMAGED_DIR
  assert (step, plan.resume_step) == (2, 2)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get((state, data_state)), expected)


def _evaluate(workdir: pathlib.Path, setup, expected, lines) -> None:
  state, step, _ = restore.restore_state(setup.config, str(workdir))
  _assert_skipped_once(lines())
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), expected[0])


def _load(workdir: pathlib.Path, setup, expected, lines) -> None:
  trained = inference.load(str(workdir))
  _assert_skipped_once(lines())
  assert trained.step == 2
  jax.tree.map(np.testing.assert_array_equal, trained.params, expected[0].params)


def _assert_skipped_once(lines: list[str]) -> None:
  assert len(lines) == 1 and re.fullmatch(
      r"checkpoint 4 of \S+ is damaged \(.+\); skipped \(a training run in this workdir "
      r"moves it aside\)", lines[0]), lines


MODES = {"resume": _resume, "eval": _evaluate, "load": _load}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_every_file_of_a_checkpoint_damaged_is_one_line_and_a_fallback(
    trained, setup, intact_2, tmp_path, capfd, damage, mode):
  failures = {}
  files = checkpoint_files(trained, 4)
  assert integrity.RECORD_FILE in files and len(files) > 10
  for number, name in enumerate(files):
    workdir = tmp_path / str(number)
    shutil.copytree(trained, workdir)
    DAMAGES[damage](workdir / "checkpoints" / "4" / name)
    capfd.readouterr()
    lines = lambda: [  # noqa: E731
        line for line in capfd.readouterr().err.splitlines() if line.strip()]
    try:
      MODES[mode](workdir, setup, intact_2, lines)
    except Exception as e:  # noqa: BLE001 - collected: the matrix names every failing cell
      failures[name] = f"{type(e).__name__}: {str(e)[:300]}"
    shutil.rmtree(workdir)
  assert not failures, f"{damage} x {mode}: {len(failures)} of {len(files)} files: {failures}"


@pytest.mark.parametrize("damage", DAMAGES)
def test_load_without_a_readable_config_json_takes_the_checkpoints_config_in_one_line(
    trained, intact_2, tmp_path, capfd, damage):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  DAMAGES[damage](workdir / "config.json")
  capfd.readouterr()
  loaded = inference.load(str(workdir))
  lines = capfd.readouterr().err.strip().splitlines()
  assert loaded.step == 4
  assert len(lines) == 1 and re.fullmatch(
      r"\S+config.json (is damaged \(\w+\)|is missing); using the config saved with "
      r"checkpoint 4", lines[0]), lines


def _damage_every_array_file(workdir: pathlib.Path) -> None:
  for step in (2, 4):
    for path in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
      if path.is_file() and path.parent.name == "d":
        _flip_middle(path)


@pytest.mark.parametrize("mode", ["resume", "eval", "load"])
def test_when_no_checkpoint_is_intact_each_reader_says_so_in_one_line(
    trained, setup, tmp_path, capfd, mode):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  _damage_every_array_file(workdir)
  capfd.readouterr()
  read = {"resume": lambda: loop.plan(setup, str(workdir)),
          "eval": lambda: restore.restore_state(setup.config, str(workdir)),
          "load": lambda: inference.load(str(workdir))}[mode]
  with pytest.raises(SetupError, match=r"^no checkpoint of \S+ is intact \(2: .+; 4: .+\); move "
                     r"them out of the directory \(or relaunch with "
                     r"--config.train.resume=restart\) to start afresh$"):
    read()
  assert capfd.readouterr().err.strip() == ""  # the error is the one line
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]  # nothing moved or deleted


@pytest.mark.slow
def test_launched_readers_exit_with_one_line(trained, tmp_path):
  """The exit path launch.py gives the in-process results above: eval of a damaged newest
  checkpoint succeeds from the older one after one line; a relaunch with none intact fails
  in one line."""
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  _flip_middle(max((workdir / "checkpoints" / "4" / "state").rglob("d/*"),
                   key=lambda p: p.stat().st_size))
  flags = [f"--config.{key}={value}" for key, value in BASE.items()]
  result = run_launch(SMOKE, f"--workdir={workdir}", "--mode=eval", *flags, devices=1)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 0 and len(lines) == 1, result.stderr
  assert re.fullmatch(r"checkpoint 4 of \S+ is damaged \(.+\); skipped .+", lines[0])
  _damage_every_array_file(workdir)
  result = run_launch(SMOKE, f"--workdir={workdir}", *flags, devices=1)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr
  assert lines[0].startswith("launch.py: error: no checkpoint of ")
