"""Checkpoints written before integrity records existed are legacy, not damaged.

A legacy step is one whose orbax step metadata lacks the mark every save since carries and
that has no integrity.json. Readers use it (one line each) and change nothing; a training
run seals it with a record of what it holds and resumes from it. A step that carries the
mark but no record is an interrupted save (damaged), also beside legacy steps.
"""

import json
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from mlvae_jax import inference, train
from mlvae_jax.training import checkpoint, integrity, restore
from mlvae_jax.training import setup as setup_lib
from tests.test_launch import snapshot
from tests.training.test_train import smoke_config

BASE = {"mesh.data": 1, "evals.val.every": 0}
LEGACY_LINE = (r"checkpoint {step} of \S+ was written before integrity records; its values "
               r"cannot be checked against the save \({how}\)")
READER = "a training run in this workdir seals it"
SEALED = r"sealed now with a record of what it holds \(integrity.json\)"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
  """One finished smoke run (checkpoints at 2 and 4) written by this version."""
  workdir = tmp_path_factory.mktemp("legacy") / "run"
  train.train_and_evaluate(smoke_config(**BASE), str(workdir))
  return workdir


@pytest.fixture(scope="module")
def setup():
  return setup_lib.setup(smoke_config(**BASE))


@pytest.fixture(scope="module")
def saved(trained, setup):
  """{step: state} as saved, read through their integrity records."""
  reader = checkpoint.Checkpoints(str(trained), read_only=True)
  return {step: jax.device_get(reader.restore(step, setup.abstract_state, with_data=False)[0])
          for step in (2, 4)}


def make_legacy(step_dir: pathlib.Path) -> None:
  """What a step written before integrity records holds: no record, no mark."""
  (step_dir / integrity.RECORD_FILE).unlink()
  metadata_file = step_dir / checkpoint._STEP_METADATA
  metadata = json.loads(metadata_file.read_text())
  del metadata["custom_metadata"][checkpoint._SEALED_MARK]
  metadata_file.write_text(json.dumps(metadata))


def copy_with_legacy(trained: pathlib.Path, tmp_path: pathlib.Path, steps) -> pathlib.Path:
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir)
  for step in steps:
    make_legacy(workdir / "checkpoints" / str(step))
  return workdir


def err_lines(capfd) -> list[str]:
  return [line for line in capfd.readouterr().err.splitlines() if line.strip()]


def test_saves_carry_the_mark_that_tells_them_from_legacy_steps(trained):
  for step in (2, 4):
    metadata_file = trained / "checkpoints" / str(step) / checkpoint._STEP_METADATA
    metadata = json.loads(metadata_file.read_text())
    assert metadata["custom_metadata"] == {checkpoint._SEALED_MARK: True}


def test_readers_use_legacy_steps_in_one_line_each_and_change_nothing(
    trained, setup, saved, tmp_path, capfd):
  workdir = copy_with_legacy(trained, tmp_path, [2, 4])
  before = snapshot(workdir)
  capfd.readouterr()
  state, step, _ = restore.restore_state(setup.config, str(workdir), step=4)
  lines = err_lines(capfd)
  assert [re.fullmatch(LEGACY_LINE.format(step=s, how=READER), line) is not None
          for s, line in zip((2, 4), lines)] == [True, True] and len(lines) == 2, lines
  assert step == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), saved[4])
  loaded = inference.load(str(workdir), step=2)
  jax.tree.map(np.testing.assert_array_equal, loaded.params, saved[2].params)
  assert len(err_lines(capfd)) == 2
  assert snapshot(workdir) == before  # nothing sealed, moved or written by a reader


def test_training_seals_legacy_steps_and_resumes_from_the_newest(trained, saved, tmp_path,
                                                                 capfd):
  workdir = copy_with_legacy(trained, tmp_path, [2, 4])
  state_4 = workdir / "checkpoints" / "4" / "state"
  files = lambda: {p: (p.stat().st_ino, p.stat().st_mtime_ns)  # noqa: E731
                   for p in state_4.rglob("*") if p.is_file()}
  saved_files = files()
  capfd.readouterr()
  train.train_and_evaluate(smoke_config(**BASE, **{"train.num_steps": 6}), str(workdir))
  # Resumed from it, not restarted: a restart would have written checkpoint 4 anew.
  assert files() == saved_files
  lines = err_lines(capfd)
  for step in (2, 4):
    assert any(re.fullmatch(LEGACY_LINE.format(step=step, how=SEALED), line) for line in lines)
  assert not (workdir / checkpoint.DAMAGED_DIR).exists()
  logged = [json.loads(line)["step"] for line in
            (workdir / "metrics.jsonl").read_text().splitlines() if '"train/loss"' in line]
  assert logged == sorted(set(logged)) and logged[-1] == 6  # resumed, not restarted
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)
  assert reader.steps() == [2, 4, 6] and err_lines(capfd) == []  # all sealed now
  for step in (2, 4):
    record = integrity.read_record(str(workdir / "checkpoints" / str(step)))
    assert set(record["arrays"]) == set(
        integrity.array_record(saved[step]))  # names and shapes, not values
  # Sealed: damage after this point is caught like any other.
  victim = max((workdir / "checkpoints" / "4" / "state").rglob("d/*"),
               key=lambda p: p.stat().st_size)
  victim.write_bytes(victim.read_bytes()[:100])
  reread = checkpoint.Checkpoints(str(workdir), read_only=True)
  assert 4 in reread.damaged and 4 not in reread.steps()


def test_a_marked_step_without_record_beside_legacy_ones_is_an_interrupted_save(
    trained, setup, saved, tmp_path, capfd):
  workdir = copy_with_legacy(trained, tmp_path, [2])
  (workdir / "checkpoints" / "4" / integrity.RECORD_FILE).unlink()  # its save never completed
  capfd.readouterr()
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)
  assert reader.steps() == [2] and set(reader.damaged) == {4}
  state, step, _ = restore.restore_state(setup.config, str(workdir))
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), saved[2])
  lines = err_lines(capfd)
  assert re.fullmatch(LEGACY_LINE.format(step=2, how=READER), lines[0])
  assert any(re.fullmatch(r"checkpoint 4 of \S+ is damaged \(no integrity.json: the save never "
                          r"completed\); skipped .+", line) for line in lines), lines


def test_an_unreadable_legacy_step_is_damaged_and_the_older_one_used(
    trained, setup, saved, tmp_path, capfd):
  workdir = copy_with_legacy(trained, tmp_path, [2, 4])
  (workdir / "checkpoints" / "4" / "state" / "_METADATA").write_bytes(b"")
  capfd.readouterr()
  reader = checkpoint.Checkpoints(str(workdir), read_only=True)
  assert reader.steps() == [2]
  assert reader.damaged[4].startswith("written before integrity records, and unreadable")
  state, step, _ = restore.restore_state(setup.config, str(workdir))
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), saved[2])
  assert os.path.isdir(workdir / "checkpoints" / "4")  # readers move nothing
