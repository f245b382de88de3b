"""What `jax.distributed.initialize` is given under SLURM, read from SLURM's variables.

JAX detects SLURM itself, but silently, and it gives every task only the GPU of its
SLURM_LOCALID, even a lone task on a node of four. Reading the variables here makes a launch
testable (tests fake the environment) and a missing or inconsistent variable a one-line
error naming it. The first host of the step's node list is the coordinator. Tasks that share
a node's GPUs (several per node, `--gpus-per-node`) take the GPU of their SLURM_LOCALID; a lone
task per node, or tasks given their own GPUs (`--gpus-per-task`), take all they see.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from typing import Any, Mapping

import jax

from mlvae_jax.training import sharding
from mlvae_jax.training.workdir import SetupError

_PORT_BASE = 65536 - 4096  # the port range JAX's own SLURM detection uses, by job id
_SRUN_HINT = "start the processes with srun inside the batch job (launch/slurm.sbatch)"


@dataclasses.dataclass(frozen=True)
class DistributedArguments:
  coordinator_address: str
  num_processes: int
  process_id: int
  local_device_ids: list[int] | None

  def initialize_kwargs(self) -> dict[str, Any]:
    """jax.distributed.initialize's keyword arguments. JAX's own detection is switched off,
    or it would add SLURM_LOCALID's GPU where these arguments leave all devices visible."""
    return dict(dataclasses.asdict(self), cluster_detection_method="deactivate",
                initialization_timeout=120)


def expand_hostlist(hostlist: str) -> list[str]:
  """SLURM's compressed host list: 'node[01-03,07],login1' -> node01..node03, node07, login1."""
  hosts = []
  for name in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
    parts = re.split(r"\[([^\]]*)\]", name)  # literal, ranges, literal, ranges, ..., literal
    choices = [[p] if i % 2 == 0 else _expand_ranges(p, hostlist) for i, p in enumerate(parts)]
    hosts += ["".join(c) for c in itertools.product(*choices)]
  return hosts


def _expand_ranges(ranges: str, hostlist: str) -> list[str]:
  out = []
  for item in ranges.split(","):
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
    if not match:
      raise SetupError(f"SLURM host list {hostlist!r}: cannot read the range {item!r}")
    first, last = match.group(1), match.group(2) or match.group(1)
    out += [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
  return out


def expand_tasks_per_node(tasks_per_node: str) -> list[int]:
  """SLURM's compressed tasks per node, e.g. '4(x2),2' -> [4, 4, 2]."""
  counts = []
  for item in tasks_per_node.split(","):
    match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
    if not match:
      raise SetupError(f"SLURM tasks per node {tasks_per_node!r}: cannot read {item!r}")
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def under_slurm(environ: Mapping[str, str]) -> bool:
  """True inside a SLURM job step (srun sets SLURM_PROCID for every task)."""
  return "SLURM_PROCID" in environ and "SLURM_JOB_ID" in environ


def _read(environ: Mapping[str, str], *names: str) -> str:
  for name in names:
    if name in environ:
      return environ[name]
  raise SetupError(f"--distributed under SLURM needs {' or '.join(names)}; {_SRUN_HINT}")


def _read_int(environ: Mapping[str, str], *names: str) -> int:
  value = _read(environ, *names)
  try:
    return int(value)
  except ValueError:
    name = next(n for n in names if n in environ)
    raise SetupError(f"{name}={value!r} is not an integer; {_SRUN_HINT}") from None


def _check(consistent: bool, what: str) -> None:
  if not consistent:
    raise SetupError(f"SLURM's variables disagree: {what}; {_SRUN_HINT}")


def slurm_arguments(environ: Mapping[str, str], coordinator_address: str | None = None,
                    num_processes: int | None = None,
                    process_id: int | None = None) -> DistributedArguments:
  """The coordinator (first node, a port chosen by job id or JAX_COORDINATOR_PORT), process
  count, this process's index and its local devices; an argument given overrides SLURM's."""
  nodelist = _read(environ, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
  per_node = _read(environ, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
  nodes, tasks = expand_hostlist(nodelist), expand_tasks_per_node(per_node)
  ntasks = _read_int(environ, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
  procid, node_id, local_id = (_read_int(environ, name)
                               for name in ("SLURM_PROCID", "SLURM_NODEID", "SLURM_LOCALID"))
  _check(len(tasks) == len(nodes),
         f"tasks per node {per_node!r} name {len(tasks)} nodes, the node list {nodelist!r} "
         f"{len(nodes)}")
  _check(sum(tasks) == ntasks, f"{ntasks} tasks, but tasks per node {per_node!r} add up to "
         f"{sum(tasks)}")
  _check(0 <= procid < ntasks, f"SLURM_PROCID={procid} is not one of the {ntasks} tasks")
  _check(0 <= node_id < len(nodes), f"SLURM_NODEID={node_id} is not one of the {len(nodes)} nodes")
  _check(0 <= local_id < tasks[node_id],
         f"SLURM_LOCALID={local_id} but node {node_id} runs {tasks[node_id]} tasks")
  port = (environ.get("JAX_COORDINATOR_PORT")
          or _PORT_BASE + _read_int(environ, "SLURM_JOB_ID") % 4096)
  shares_gpus = tasks[node_id] > 1 and "SLURM_GPUS_PER_TASK" not in environ
  args = DistributedArguments(
      coordinator_address=coordinator_address or f"{nodes[0]}:{port}",
      num_processes=ntasks if num_processes is None else num_processes,
      process_id=procid if process_id is None else process_id,
      local_device_ids=[local_id] if shares_gpus else None,
  )
  if not 0 <= args.process_id < args.num_processes:
    raise SetupError(f"process {args.process_id} of {args.num_processes}: the process id must "
                     "lie in [0, num_processes); check --process_id and --num_processes")
  return args


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, distributed: bool = False,
               environ: Mapping[str, str] = os.environ) -> None:
  """Joins a multi-process run, if this is one. With `distributed` inside a SLURM job step the
  arguments come from SLURM's variables (any given here wins); otherwise from the arguments,
  the JAX_* variables or, with `distributed`, JAX's own detection (Cloud TPU, MPI)."""
  if distributed and under_slurm(environ):
    args = slurm_arguments(environ, coordinator_address, num_processes, process_id)
    jax.distributed.initialize(**args.initialize_kwargs())
  else:
    sharding.initialize_distributed(coordinator_address, num_processes, process_id,
                                    auto_detect=distributed)
