"""Sweeps: expansion, naming, override checks, printed commands, and a 2 x 2 smoke sweep."""

import contextlib
import csv
import io
import signal
import subprocess
import sys
import time

import pytest

from experiments import digits
from mlvae_jax import config_helpers, sweep
from mlvae_jax.training import run_lock
from mlvae_jax.training.workdir import SetupError
from tests.test_launch import ROOT, SMOKE, run_launch


def test_product_is_every_combination_first_key_slowest():
  assert config_helpers.product({"a": [1, 2], "b": ["x", "y"]}) == [
      {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]


def test_point_names_are_readable_directory_names():
  assert sweep.point_name({"objective.variant": "vae", "seed": 1}) == "objective.variant=vae,seed=1"
  assert sweep.point_name({"data.unseen_groups": "1/2 3"}) == "data.unseen_groups=1_2_3"


def test_overrides_are_checked_like_flags():
  config = digits.get_config("smoke")
  assert sweep.apply_overrides(config, {"optim.learning_rate": 0.01}).optim.learning_rate == 0.01
  with pytest.raises(SetupError, match="did you mean 'optim.learning_rate'"):
    sweep.apply_overrides(config, {"optim.learning_rat": 0.01})
  with pytest.raises(SetupError, match="wrong type"):
    sweep.apply_overrides(config, {"train.num_steps": "many"})


def test_print_only_gives_one_launch_command_per_point(tmp_path, capsys):
  status = sweep.launch(
      digits.get_config("smoke"), config_spec="experiments/digits.py:smoke",
      overrides={"train.num_steps": 2}, workdir=str(tmp_path / "sweep"), sweep_file=None,
      parallel=2, print_only=True, launcher=(sys.executable, "launch.py"))
  lines = capsys.readouterr().out.strip().splitlines()
  assert status == 0 and len(lines) == 4
  assert all("--config=experiments/digits.py:smoke --config.train.num_steps=2" in line for line in lines)
  assert "--config.objective.variant=vae --config.seed=1" in lines[-1]
  assert not (tmp_path / "sweep").exists()


def test_a_sweep_file_with_a_bad_key_is_refused_before_running(tmp_path):
  sweep_file = tmp_path / "bad_sweep.py"
  sweep_file.write_text("def get_sweep(arg=None):\n  return [{'model.hiden': 8}]\n")
  result = run_launch(SMOKE, f"--workdir={tmp_path / 'sweep'}", "--mode=sweep",
                      f"--sweep={sweep_file}")
  assert result.returncode != 0
  assert result.stderr.strip() == (
      "launch.py: error: unknown config key 'model.hiden'; did you mean 'model.hidden'?")
  assert not (tmp_path / "sweep").exists()


# Stands in for launch.py: fails (exit 3) while SWEEP_DIR/fail-<seed> exists, exits 0
# without final metrics while SWEEP_DIR/quiet-<seed> exists, else writes them.
FAKE_LAUNCHER = """
import json, os, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
workdir, seed = args["workdir"], args["config.seed"]
print("fake run of seed", seed)
sweep_dir = os.path.dirname(workdir)
if os.path.exists(os.path.join(sweep_dir, "fail-" + seed)):
  sys.exit(3)
if not os.path.exists(os.path.join(sweep_dir, "quiet-" + seed)):
  os.makedirs(workdir, exist_ok=True)
  json.dump({"step": 1, "val/elbo": -10.0 - int(seed)}, open(os.path.join(workdir, "final_metrics.json"), "w"))
"""


def _fake_sweep(tmp_path):
  """Runs a 3-point sweep (seeds 0, 1, 2) with the fake launcher; returns (exit status,
  {point: status} from sweep.csv)."""
  launcher = tmp_path / "fake_launch.py"
  launcher.write_text(FAKE_LAUNCHER)
  sweep_file = tmp_path / "seeds.py"
  sweep_file.write_text("def get_sweep(arg=None):\n  return [{'seed': s} for s in range(3)]\n")
  status = sweep.launch(
      digits.get_config("smoke"), config_spec="experiments/digits.py:smoke", overrides={},
      workdir=str(tmp_path / "sweep"), sweep_file=str(sweep_file), parallel=2, print_only=False,
      launcher=(sys.executable, str(launcher)))
  with open(tmp_path / "sweep" / sweep.CSV_FILE) as f:
    return status, {row["point"]: row["status"] for row in csv.DictReader(f)}


def test_a_failed_point_fails_the_sweep_and_runs_again_on_rerun(tmp_path):
  (tmp_path / "sweep").mkdir()
  (tmp_path / "sweep" / "fail-1").touch()
  (tmp_path / "sweep" / "quiet-2").touch()  # exit 0 without final metrics is a failure too
  status, points = _fake_sweep(tmp_path)
  assert status == 1
  assert points == {"seed=0": "done", "seed=1": "failed", "seed=2": "failed"}
  markdown = (tmp_path / "sweep" / sweep.MARKDOWN_FILE).read_text()
  assert "| seed=1 | failed | 1 |" in markdown and "| seed=0 | done | 0 | -10 |" in markdown

  (tmp_path / "sweep" / "fail-1").unlink()  # the cause is fixed: rerun the sweep
  (tmp_path / "sweep" / "quiet-2").unlink()
  status, points = _fake_sweep(tmp_path)
  assert status == 0
  assert points == {"seed=0": "done earlier", "seed=1": "done", "seed=2": "done"}
  log = (tmp_path / "sweep" / sweep.LOG_DIR / "seed=1.log").read_text()
  assert log.count("fake run of seed 1") == 2  # both tries kept
  assert (tmp_path / "sweep" / sweep.LOG_DIR / "seed=0.log").read_text().count("fake run") == 1


@pytest.mark.slow
def test_two_by_two_smoke_sweep_runs_skips_finished_points_and_summarises(tmp_path):
  workdir = tmp_path / "sweep"
  args = (SMOKE, f"--workdir={workdir}", "--mode=sweep", "--sweep_parallel=2",
          "--config.train.num_steps=2")
  result = run_launch(*args, timeout=600)
  assert result.returncode == 0, result.stderr
  names = [sweep.point_name(p) for p in digits.get_sweep()]
  with open(workdir / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["point"] for r in rows] == names and {r["status"] for r in rows} == {"done"}
  assert all(float(r["val/elbo"]) < 0 for r in rows)
  assert (workdir / "sweep.md").read_text().startswith("| point | status | objective.variant | seed |")
  assert all((workdir / name / "final_metrics.json").exists() for name in names)

  rerun = run_launch(*args, timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  with open(workdir / "sweep.csv") as f:
    assert {r["status"] for r in csv.DictReader(f)} == {"done earlier"}


def test_a_sweep_file_takes_its_own_arg_after_a_colon(tmp_path):
  sweep_file = tmp_path / "points.py"
  sweep_file.write_text(
      "def get_sweep(arg=None):\n"
      "  return [{'seed': 1}] if arg == 'other' else [{'seed': 2}, {'seed': 3}]\n"
  )
  config = digits.get_config("smoke")
  common = dict(config_spec="experiments/digits.py:smoke", overrides={}, workdir=str(tmp_path / "w"),
                parallel=1, print_only=True, launcher=("python", "launch.py"))
  lines = {}
  for spec in (f"{sweep_file}:other", str(sweep_file)):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
      assert sweep.launch(config, sweep_file=spec, **common) == 0
    lines[spec] = buffer.getvalue().strip().splitlines()
  assert len(lines[f"{sweep_file}:other"]) == 1 and "seed=1" in lines[f"{sweep_file}:other"][0]
  assert len(lines[str(sweep_file)]) == 2


STOPPABLE_LAUNCHER = """
import signal, sys, time
def stop(signum, frame):
  print("fake point stopped by", signal.Signals(signum).name, flush=True)
  sys.exit(75)
signal.signal(signal.SIGTERM, stop)
print("fake point running", flush=True)
time.sleep(120)
sys.exit(1)
"""

SWEEP_PROCESS = """
import sys
from experiments import digits
from mlvae_jax import sweep
sys.exit(sweep.launch(
    digits.get_config("smoke"), config_spec="experiments/digits.py:smoke", overrides={},
    workdir=sys.argv[1], sweep_file=sys.argv[2], parallel=2, print_only=False,
    launcher=(sys.executable, sys.argv[3])))
"""


def test_a_stop_signal_reaches_the_running_points_and_the_table_is_still_written(tmp_path):
  launcher = tmp_path / "fake_launch.py"
  launcher.write_text(STOPPABLE_LAUNCHER)
  sweep_file = tmp_path / "seeds.py"
  sweep_file.write_text("def get_sweep(arg=None):\n  return [{'seed': s} for s in range(3)]\n")
  workdir = tmp_path / "sweep"
  process = subprocess.Popen(
      [sys.executable, "-c", SWEEP_PROCESS, str(workdir), str(sweep_file), str(launcher)],
      cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  logs = [workdir / sweep.LOG_DIR / f"seed={seed}.log" for seed in (0, 1)]
  deadline = time.monotonic() + 120
  while not all(log.exists() and "fake point running" in log.read_text() for log in logs):
    assert time.monotonic() < deadline and process.poll() is None, "the points never started"
    time.sleep(0.1)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 75, stderr
  assert "sweep: SIGTERM: stopping 2 running point(s); 1 not started" in stderr
  assert all("fake point stopped by SIGTERM" in log.read_text() for log in logs)
  with open(workdir / sweep.CSV_FILE) as f:
    points = {row["point"]: row["status"] for row in csv.DictReader(f)}
  assert points == {"seed=0": "stopped", "seed=1": "stopped", "seed=2": "pending"}


def test_a_second_sweep_in_the_same_workdir_is_refused_naming_the_first(tmp_path):
  workdir = tmp_path / "sweep"
  first = run_lock.RunLock(str(workdir))
  first.acquire()
  first.announce()
  try:
    with pytest.raises(SetupError, match=rf"workdir {workdir} is in use by another run \(host "
                       r"\S+, pid \d+, started \S+\)"):
      _fake_sweep(tmp_path)
  finally:
    first.release()
  assert not (workdir / sweep.CSV_FILE).exists() and not (workdir / sweep.LOG_DIR).exists()
