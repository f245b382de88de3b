"""The cluster recipes of launch/, run here with their outside world faked.

- Dockerfile: the files its COPY lines bring are laid out as in the image, and its pip lines
  run there with `pip install --dry-run` against the package registry, once per BACKEND.
- slurm.sbatch: runs under SLURM's batch variables with a fake srun that starts its tasks
  here; each task is the real launch.py whose jax.distributed.initialize only records what
  it is given.
- tpu_vm.sh: a fake gcloud copies the archive into a temporary home and runs the workers'
  command there, with a fake Python whose virtual environment records pip and launch.py.
"""

import configparser
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from packaging.specifiers import SpecifierSet

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"

# Runs `python SCRIPT ARGS`, but jax.distributed.initialize writes its arguments and the
# command line to RECORD_DIR/task<SLURM_PROCID>.json and ends the process with TASK_STATUS.
RECORDER = '''
import inspect, json, os, pathlib, runpy, sys
import jax

def record(*args, **kwargs):
  given = inspect.signature(initialize).bind(*args, **kwargs).arguments
  task = pathlib.Path(os.environ["RECORD_DIR"]) / f"task{os.environ.get('SLURM_PROCID', 0)}.json"
  task.write_text(json.dumps({"argv": sys.argv, "initialize": given}))
  sys.exit(int(os.environ.get("TASK_STATUS", "0")))

initialize, jax.distributed.initialize = jax.distributed.initialize, record
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
'''

# srun: records its own options, then starts SLURM_JOB_NUM_NODES x SLURM_NTASKS_PER_NODE
# tasks here with the variables a real srun gives each task, and exits with the worst status.
FAKE_SRUN = '''
import json, os, subprocess, sys
options, command = [], sys.argv[1:]
while command[0].startswith("--"):
  options.append(command.pop(0))
open(os.path.join(os.environ["RECORD_DIR"], "srun.json"), "w").write(json.dumps(options))
nodes, per_node = int(os.environ["SLURM_JOB_NUM_NODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
step = {"SLURM_STEP_NODELIST": os.environ["SLURM_JOB_NODELIST"],
        "SLURM_STEP_TASKS_PER_NODE": os.environ["SLURM_TASKS_PER_NODE"],
        "SLURM_STEP_NUM_TASKS": str(nodes * per_node), "SLURM_STEP_ID": "0"}
tasks = [subprocess.Popen(command, env=dict(
    os.environ, **step, SLURM_PROCID=str(node * per_node + local), SLURM_NODEID=str(node),
    SLURM_LOCALID=str(local))) for node in range(nodes) for local in range(per_node)]
sys.exit(max(task.wait() for task in tasks))
'''


def _executable(path: pathlib.Path, text: str) -> pathlib.Path:
  path.write_text(text)
  path.chmod(0o755)
  return path


def _recording_python(path: pathlib.Path, recorder: pathlib.Path) -> pathlib.Path:
  return _executable(path, f'#!/bin/sh\nexec {shlex.quote(sys.executable)} '
                           f'{shlex.quote(str(recorder))} "$@"\n')


def _clean_environ() -> dict[str, str]:
  """This process's environment less any SLURM or JAX coordination variables."""
  return {name: value for name, value in os.environ.items()
          if not name.startswith(("SLURM_", "JAX_COORDINATOR", "JAX_NUM_", "JAX_PROCESS"))}


def _tasks(record_dir: pathlib.Path) -> list[dict]:
  return [json.loads(p.read_text()) for p in sorted(record_dir.glob("task*.json"))]


# --- Dockerfile -----------------------------------------------------------------------------

ACCELERATOR_PACKAGES = {"cpu": set(), "cuda": {"jax-cuda12-plugin", "jax-cuda12-pjrt"},
                        "cuda13": {"jax-cuda13-plugin", "jax-cuda13-pjrt"}, "tpu": {"libtpu"}}

# The image's pip, but `pip install` resolves only (--dry-run) and from nothing installed, as
# in a fresh image, and reports what it would install to $REPORT.
PIP_DRY_RUN = '''pip() {
  if [ "$1" = install ]; then
    shift; "$PY" -m pip install --dry-run --ignore-installed --quiet --report "$REPORT" "$@"
  else "$PY" -m pip "$@"; fi
}
'''


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
  """(INSTRUCTION, its arguments), continuation lines joined and comment lines dropped."""
  instructions, pending = [], ""
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith("#"):
      continue
    if line.endswith("\\"):
      pending += line[:-1] + " "
      continue
    instruction, _, arguments = (pending + line).strip().partition(" ")
    instructions.append((instruction.upper(), arguments.strip()))
    pending = ""
  return instructions


def _copy_into_image(arguments: str, workdir: pathlib.Path) -> None:
  """COPY SRC... DEST from the build context (the repository root)."""
  *sources, dest = arguments.split()
  target = workdir / dest
  for source in sources:
    if (ROOT / source).is_dir():
      shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      target.mkdir(parents=True, exist_ok=True)
      shutil.copy(ROOT / source, target)


def run_dockerfile_pip_lines(image: pathlib.Path, build_args: dict[str, str]) -> list:
  """Follows launch/Dockerfile's ARG, WORKDIR and COPY lines under `image` and runs each RUN
  line holding `pip install` there with pip dry-running; the completed processes and their
  reports, in order."""
  workdir, arguments, runs = image, {}, []
  for instruction, rest in dockerfile_instructions((LAUNCH / "Dockerfile").read_text()):
    if instruction == "ARG":
      name, _, default = rest.partition("=")
      arguments[name] = build_args.get(name, default)
    elif instruction == "WORKDIR":
      workdir = image / rest.lstrip("/")
      workdir.mkdir(parents=True, exist_ok=True)
    elif instruction == "COPY":
      _copy_into_image(rest, workdir)
    elif instruction == "RUN" and "pip install" in rest:
      report = image / f"report{len(runs)}.json"
      command = re.sub(r"^(--\S+\s+)+", "", rest)  # RUN's own options (--mount=...)
      result = subprocess.run(
          ["sh", "-c", PIP_DRY_RUN + command], cwd=workdir, capture_output=True, text=True,
          env=dict(os.environ, **arguments, PY=sys.executable, REPORT=str(report)), timeout=540)
      runs.append((result, report))
  return runs


@pytest.fixture(scope="module")
def registry():
  """Skips when the package registry cannot be reached (a package only it holds)."""
  probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "jax-cuda12-plugin"],
                         capture_output=True, text=True, timeout=300)
  if probe.returncode:
    pytest.skip(f"package registry unreachable: {probe.stderr.strip().splitlines()[-1:]}")


def _jax_requirement() -> SpecifierSet:
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  (jax,) = [r for r in setup["options"]["install_requires"].split() if r.startswith("jax>")]
  return SpecifierSet(jax.removeprefix("jax"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(ACCELERATOR_PACKAGES))
def test_the_dockerfiles_pip_lines_resolve_for_each_backend(backend, registry, tmp_path):
  runs = run_dockerfile_pip_lines(tmp_path, {"BACKEND": backend})
  assert runs, "launch/Dockerfile has no RUN line with pip install"
  for result, report in runs:
    assert result.returncode == 0, result.stderr[-3000:]
    installs = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower():
                item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert "mlvae-jax" in installs  # the copied files are enough to build the project
    assert installs["jax"] in _jax_requirement() and installs["jaxlib"] == installs["jax"]
    found = {p for packages in ACCELERATOR_PACKAGES.values() for p in packages} & set(installs)
    assert found == ACCELERATOR_PACKAGES[backend]
    assert all(installs[p] == installs["jax"] for p in found if p.startswith("jax"))


def test_an_unknown_backend_stops_the_build_naming_the_choices(tmp_path):
  ((result, report),) = run_dockerfile_pip_lines(tmp_path, {"BACKEND": "gpu"})
  assert result.returncode != 0 and not report.exists()
  assert "BACKEND=gpu: use cpu, cuda, cuda13 or tpu" in result.stderr


def test_the_container_runs_the_readmes_quickstart():
  (cmd,) = [rest for instruction, rest in dockerfile_instructions(
      (LAUNCH / "Dockerfile").read_text()) if instruction == "CMD"]
  program, script, config, workdir = json.loads(cmd)
  assert (program, script, workdir) == ("python", "launch.py", "--workdir=/work/run")
  assert f"python launch.py {config} --workdir=" in (ROOT / "README.md").read_text()


# --- SLURM ----------------------------------------------------------------------------------

def _sbatch_options() -> dict[str, str]:
  """The active #SBATCH options (not the ##SBATCH ones left for editing), {option: value}."""
  lines = (LAUNCH / "slurm.sbatch").read_text().splitlines()
  return dict(line.removeprefix("#SBATCH ").partition("=")[::2] for line in lines
              if line.startswith("#SBATCH --"))


def test_the_batch_script_parses_and_asks_one_task_per_gpu():
  subprocess.run(["bash", "-n", str(LAUNCH / "slurm.sbatch")], check=True)
  options = _sbatch_options()
  assert options["--ntasks-per-node"] == options["--gpus-per-node"]
  assert {"--nodes", "--cpus-per-task", "--time"} <= set(options)


def run_batch_script(tmp_path: pathlib.Path, nodes: int, per_node: int, *args: str,
                     **variables: str) -> subprocess.CompletedProcess:
  """`sbatch launch/slurm.sbatch ARGS` as the batch step of job 4100 on nodes gpu07...; srun,
  scontrol and python are fakes that record under tmp_path/record."""
  bin_dir, record = tmp_path / "bin", tmp_path / "record"
  bin_dir.mkdir()
  record.mkdir()
  recorder = tmp_path / "recorder.py"
  recorder.write_text(RECORDER)
  _recording_python(bin_dir / "python", recorder)
  _executable(bin_dir / "srun", f"#!{sys.executable}\n{FAKE_SRUN}")
  _executable(bin_dir / "scontrol", '#!/bin/sh\necho "$@" > "$RECORD_DIR/scontrol.txt"\n')
  environ = dict(
      _clean_environ(), PATH=f"{bin_dir}:{os.environ['PATH']}", RECORD_DIR=str(record),
      JAX_PLATFORMS="cpu", SLURM_JOB_ID="4100", SLURM_SUBMIT_DIR=str(ROOT),
      SLURM_JOB_NODELIST=f"gpu[07-{7 + nodes - 1:02d}]", SLURM_JOB_NUM_NODES=str(nodes),
      SLURM_NTASKS=str(nodes * per_node), SLURM_NTASKS_PER_NODE=str(per_node),
      SLURM_TASKS_PER_NODE=f"{per_node}(x{nodes})", SLURM_CPUS_PER_TASK="8",
      SLURM_PROCID="0", SLURM_NODEID="0", SLURM_LOCALID="0",
      WORKDIR=str(tmp_path / "run"), **variables)
  environ.pop("PYTHON", None)
  return subprocess.run(["bash", str(LAUNCH / "slurm.sbatch"), *args], env=environ,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four launch.py processes: 15-25 s on 2 cores
def test_each_srun_task_gives_jax_its_place_in_the_job(tmp_path):
  result = run_batch_script(tmp_path, 2, 2, "--config.train.num_steps=7",
                            CONFIG="experiments/digits.py:smoke")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--cpus-per-task=8" in json.loads((tmp_path / "record/srun.json").read_text())
  tasks = _tasks(tmp_path / "record")
  assert [t["argv"] for t in tasks] == [[
      "launch.py", "--distributed", "--config=experiments/digits.py:smoke",
      f"--workdir={tmp_path / 'run'}", "--config.train.num_steps=7"]] * 4
  assert [t["initialize"] for t in tasks] == [
      {"coordinator_address": f"gpu07:{65536 - 4096 + 4100 % 4096}", "num_processes": 4,
       "process_id": process, "local_device_ids": [process % 2],
       "cluster_detection_method": "deactivate", "initialization_timeout": 120}
      for process in range(4)]
  assert not (tmp_path / "record/scontrol.txt").exists()


def test_a_preempted_run_exits_75_and_requeues_its_job(tmp_path):
  result = run_batch_script(tmp_path, 1, 1, TASK_STATUS="75")
  assert result.returncode == 75, result.stderr[-3000:]
  assert (tmp_path / "record/scontrol.txt").read_text().split() == ["requeue", "4100"]
  ((task),) = _tasks(tmp_path / "record")
  assert task["initialize"]["local_device_ids"] is None  # a lone task takes all its GPUs


def test_inconsistent_slurm_variables_end_launch_py_in_one_line(tmp_path):
  environ = dict(_clean_environ(), JAX_PLATFORMS="cpu", SLURM_JOB_ID="4100",
                 SLURM_JOB_NODELIST="gpu[07-08]", SLURM_NTASKS="3", SLURM_TASKS_PER_NODE="2(x2)",
                 SLURM_PROCID="0", SLURM_NODEID="0", SLURM_LOCALID="0")
  result = subprocess.run(
      [sys.executable, "launch.py", "--distributed", "--config=experiments/digits.py:smoke",
       f"--workdir={tmp_path / 'run'}"], cwd=ROOT, env=environ, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      "launch.py: error: SLURM's variables disagree: 3 tasks, but tasks per node '2(x2)' add up "
      "to 4; start the processes with srun inside the batch job (launch/slurm.sbatch)")
  assert not (tmp_path / "run").exists()


# --- Cloud TPU VM ---------------------------------------------------------------------------

# gcloud: `... scp ARCHIVE NAME:FILE` copies into $FAKE_HOME; `... ssh NAME --command=C` runs C
# there as a worker would. Each call's arguments are recorded, one JSON list a line.
FAKE_GCLOUD = '''
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.path.join(os.environ["RECORD_DIR"], "gcloud.jsonl"), "a") as calls:
  calls.write(json.dumps(args) + "\\n")
if "scp" in args:
  source, target = args[args.index("scp") + 1:args.index("scp") + 3]
  shutil.copy(source, os.path.join(os.environ["FAKE_HOME"], target.split(":", 1)[1]))
else:
  (command,) = [a.removeprefix("--command=") for a in args if a.startswith("--command=")]
  worker = dict(os.environ, HOME=os.environ["FAKE_HOME"])
  sys.exit(subprocess.run(["bash", "-c", command], env=worker).returncode)
'''

# The workers' Python: `-m venv DIR` makes a virtual environment whose pip records its
# arguments and whose python is the recording one.
FAKE_WORKER_PYTHON = '''#!/bin/sh
[ "$1 $2" = "-m venv" ] || exit 2
mkdir -p "$3/bin"
printf '#!/bin/sh\\necho "$PWD" "$@" > "$RECORD_DIR/pip.txt"\\n' > "$3/bin/pip"
cp "$RECORDING_PYTHON" "$3/bin/python"
chmod +x "$3/bin/pip"
'''


def test_the_tpu_vm_script_installs_the_tpu_extra_and_launches_every_worker(tmp_path):
  subprocess.run(["bash", "-n", str(LAUNCH / "tpu_vm.sh")], check=True)
  bin_dir, record, home = tmp_path / "bin", tmp_path / "record", tmp_path / "home"
  for folder in (bin_dir, record, home):
    folder.mkdir()
  (tmp_path / "recorder.py").write_text(RECORDER)
  recording_python = _recording_python(tmp_path / "python", tmp_path / "recorder.py")
  _executable(bin_dir / "gcloud", f"#!{sys.executable}\n{FAKE_GCLOUD}")
  worker_python = _executable(tmp_path / "python3.11", FAKE_WORKER_PYTHON)
  environ = dict(_clean_environ(), PATH=f"{bin_dir}:{os.environ['PATH']}", JAX_PLATFORMS="cpu",
                 RECORD_DIR=str(record), FAKE_HOME=str(home),
                 RECORDING_PYTHON=str(recording_python),
                 TPU_NAME="pod", ZONE="us-east5-a", PROJECT="proj", WORKDIR="/mnt/runs/a b",
                 CONFIG="experiments/digits.py:smoke", TPU_PYTHON=str(worker_python))
  result = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--config.seed=3"], env=environ,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  scp, ssh = [json.loads(line) for line in (record / "gcloud.jsonl").read_text().splitlines()]
  common = ["compute", "tpus", "tpu-vm", "--project=proj"]
  assert scp[:5] == common + ["scp"] and scp[6:] == [
      "pod:mlvae_jax.tar.gz", "--zone=us-east5-a", "--worker=all"]
  assert ssh[:-1] == common + ["ssh", "pod", "--zone=us-east5-a", "--worker=all"]
  subprocess.run(["bash", "-n", "-c", ssh[-1].removeprefix("--command=")], check=True)
  copy = home / "mlvae_jax"
  assert (copy / "launch.py").is_file() and (copy / "setup.cfg").is_file()
  assert (record / "pip.txt").read_text().split() == [str(copy), "install", "-q", ".[tpu]"]
  ((task),) = _tasks(record)
  assert task["argv"] == ["launch.py", "--distributed", "--config=experiments/digits.py:smoke",
                          "--workdir=/mnt/runs/a b", "--config.seed=3"]
  assert task["initialize"] == {"coordinator_address": None, "num_processes": None,
                                "process_id": None, "initialization_timeout": 120}
