"""launch.py end to end in temp workdirs: runs, resume, eval on 1 device, and every bad
input of the issue (one line, non-zero exit, workdir untouched)."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mlvae_jax.training import integrity
from tests.training.test_train import SMOKE_ARG

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = f"--config=experiments/digits.py:{SMOKE_ARG}"


def run_launch(*args: str, devices: int = 8, timeout: float = 300) -> subprocess.CompletedProcess:
  """`python launch.py ARGS` from the repository root with `devices` CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def snapshot(path: pathlib.Path) -> dict[str, tuple[int, int]] | None:
  """Every file under `path` with its size and mtime (None if `path` does not exist)."""
  if not path.exists():
    return None
  return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A workdir after `launch.py` trained the smoke config for 2 steps on 8 devices."""
  workdir = tmp_path_factory.mktemp("launch") / "run"
  result = run_launch(SMOKE, f"--workdir={workdir}", "--config.train.num_steps=2")
  assert result.returncode == 0, result.stderr
  return workdir, result


def test_one_step_run_writes_config_metrics_checkpoint(tmp_path):
  result = run_launch(SMOKE, f"--workdir={tmp_path}", "--config.train.num_steps=1")
  assert result.returncode == 0, result.stderr
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["train"]["num_steps"] == 1 and config["model"]["hidden"] == 32
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  assert (tmp_path / "metrics.jsonl").read_text().count("train/loss") == 1


def test_few_step_run_is_quiet_off_a_terminal_and_a_rerun_resumes(trained):
  workdir, first = trained
  assert "it/s" not in first.stderr and "step/s" not in first.stderr  # no progress bar in a pipe
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]
  result = run_launch(SMOKE, f"--workdir={workdir}", "--config.train.num_steps=4")
  assert result.returncode == 0, result.stderr
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert steps == [2, 2, 4, 4]  # train and val records at steps 2 (first run) and 4 (resumed)


def test_eval_on_one_device_of_an_eight_device_run(trained):
  workdir, _ = trained
  result = run_launch(SMOKE, f"--workdir={workdir}", "--mode=eval", devices=1)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  metrics = json.loads(lines[-1])
  assert metrics["step"] in (2, 4) and np.isfinite(metrics["val/elbo"])
  assert f"evaluated checkpoint {workdir / 'checkpoints' / str(metrics['step'])}" in lines


def test_eval_with_another_config_is_refused(trained):
  workdir, _ = trained
  before = snapshot(workdir)
  result = run_launch(SMOKE, f"--workdir={workdir}", "--mode=eval", "--config.data.unseen_groups=9",
                      devices=1)
  _assert_refused(result, r"trained with another config \(data.unseen_groups: '' -> '9'\)",
                  workdir, before)


def _assert_refused(result, pattern, workdir, before):
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith("launch.py: error: ")
  assert re.search(pattern, lines[0]), lines[0]
  assert snapshot(workdir) == before


@pytest.mark.parametrize("override, pattern", [
    ("--config.train.num_step=3", r"unknown config key 'train.num_step'; did you mean 'train.num_steps'"),
    ("--config.trian.num_steps=3", r"did you mean 'train.num_steps'"),
    ("--config.train.num_steps=three", r"config.train.num_steps must be of type int, got 'three'"),
    ("--config.data.batch_size=60", r"batch_size=60 is not divisible by the 8 devices"),
    ("--config.train.resume=sometimes", r"config.train.resume='sometimes' is invalid"),
    ("--config.objective.single_member_rate=2", r"single_member_rate is 2.0; it is a probability"),
    ("--config.optim.weight_decay=-0.1", r"config.optim.weight_decay=-0.1 is invalid; use a rate >= 0"),
    ("--config.evals.val.type=elbow", r"config.evals.val.type='elbow' is unknown; use one of \["),
    ("--config.evals.val.max_batch=2", r"unknown config key 'evals.val.max_batch'; did you mean 'evals.val.max_batches'"),
    ("--config.train.keep_best_metric=val/accuracy", r"evaluator 'val' reports no 'accuracy'"),
    ("--config.model.content_dim=0", r"config.model.content_dim=0 is invalid; use a size >= 1"),
    ("--config.model.hidden=-3", r"config.model.hidden=-3 is invalid; use a size >= 1"),
    ("--config.train.num_steps=0", r"config.train.num_steps=0 is invalid; use a step count >= 1"),
    (f"--config.data.batch_size={8 * 10**8}", r"batch_size=800000000 needs .+ GiB of inputs per "
     r"device and a device has .+ GiB free; use a smaller batch"),
])
def test_bad_config_is_one_line_and_touches_nothing(tmp_path, override, pattern):
  workdir = tmp_path / "run"
  _assert_refused(run_launch(SMOKE, f"--workdir={workdir}", override), pattern, workdir, None)


@pytest.mark.parametrize("workdir, pattern", [
    ("", r"--workdir is empty; give the directory of the run"),
    (b"run\xff", r"workdir '\S+' is not UTF-8 text \(checkpoints cannot be written there\)"),
])
def test_a_workdir_name_that_cannot_be_used_is_one_line_and_writes_nothing(
    tmp_path, workdir, pattern):
  flag = b"--workdir=" + workdir if isinstance(workdir, bytes) else f"--workdir={workdir}"
  result = subprocess.run([sys.executable, str(ROOT / "launch.py"), SMOKE.replace(
      "experiments", str(ROOT / "experiments")), flag], cwd=tmp_path, capture_output=True,
      text=True, timeout=300)
  _assert_refused(result, pattern, tmp_path, {})


@pytest.mark.parametrize("experiment", sorted(p.name for p in (ROOT / "experiments").glob("*.py")
                                               if p.name not in ("__init__.py", "common.py")))
def test_loading_an_experiment_imports_no_jax(experiment):
  """Configs stay light: loading one (what every launch, sweep and flag error does) must not
  pull in jax, flax or the evaluation stack."""
  code = ("import runpy, sys; runpy.run_path(sys.argv[1])['get_config']('smoke'); "
          "print(sorted(m for m in ('jax', 'flax', 'sklearn', 'orbax', 'grain') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code, f"experiments/{experiment}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]"


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  workdir = blocker / "run"
  result = run_launch(SMOKE, f"--workdir={workdir}")
  _assert_refused(result, r"is not writable: .*file is not a directory", workdir, None)


def test_checkpoint_shapes_that_do_not_match_the_config(trained):
  workdir, _ = trained
  before = snapshot(workdir)
  result = run_launch(SMOKE, f"--workdir={workdir}", "--mode=eval", "--config.model.hidden=16")
  _assert_refused(result, r"does not match the config: 'params\.\S+' is \(32,\) there and \(16,\)",
                  workdir, before)


@pytest.mark.parametrize("override, pattern", [
    ("--config.model.hidden=16", r"holds checkpoints at steps \[\d.*\] of another config \(model.hidden: 32 -> 16\)"),
    ("--config.train.resume=never", r"holds checkpoints .* and config.train.resume='never'"),
])
def test_another_configs_checkpoints_are_refused(trained, override, pattern):
  workdir, _ = trained
  before = snapshot(workdir)
  _assert_refused(run_launch(SMOKE, f"--workdir={workdir}", override), pattern, workdir, before)


def test_a_run_from_before_a_config_key_existed_resumes_and_evaluates(trained, tmp_path):
  """Older runs saved no optim.weight_decay or objective.single_member_rate; their defaults
  keep the behaviour from before, so such a run must not count as another config."""
  shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
  saved_configs = [tmp_path / "config.json", *(tmp_path / "checkpoints").glob("*/config/metadata")]
  for path in saved_configs:
    config = json.loads(path.read_text())
    del config["optim"]["weight_decay"], config["objective"]["single_member_rate"]
    path.write_text(json.dumps(config))
  for step_dir in (tmp_path / "checkpoints").iterdir():  # what that older run recorded
    record = integrity.read_record(str(step_dir))
    items = {name: item["value"] for name, item in record["items"].items()}
    del items["config"]["optim"]["weight_decay"], items["config"]["objective"]["single_member_rate"]
    integrity.write_record(str(step_dir), integrity.build_record(
        str(step_dir), record["step"], record["arrays"], items))
  steps = sorted(int(step) for step in os.listdir(tmp_path / "checkpoints"))
  result = run_launch(SMOKE, f"--workdir={tmp_path}", f"--config.train.num_steps={steps[-1] + 2}")
  assert result.returncode == 0, result.stderr
  logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert logged[-1] == steps[-1] + 2 and steps[-1] in logged  # continued, not restarted
  result = run_launch(SMOKE, f"--workdir={tmp_path}", "--mode=eval", devices=1)
  assert result.returncode == 0, result.stderr


def test_restart_discards_the_old_run(trained, tmp_path):
  shutil.copytree(trained[0], tmp_path, dirs_exist_ok=True)
  result = run_launch(SMOKE, f"--workdir={tmp_path}", "--config.model.hidden=16",
                      "--config.train.num_steps=1", "--config.train.resume=restart")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]
  assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden"] == 16
