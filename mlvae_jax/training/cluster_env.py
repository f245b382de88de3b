"""What `jax.distributed.initialize` is given under SLURM, read from SLURM's variables.

JAX detects SLURM itself, but silently; reading the variables here makes a launch testable
(tests fake the environment) and a missing variable a one-line error naming it. The first
host of the job's node list is the coordinator; with several tasks on a node (one per GPU)
each task takes the GPU of its SLURM_LOCALID, with one task per node it takes them all.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Mapping

import jax

from mlvae_jax.training.workdir import SetupError

_PORT_BASE = 65536 - 4096  # the port range JAX's own SLURM detection uses, by job id


@dataclasses.dataclass(frozen=True)
class DistributedArguments:
  coordinator_address: str
  num_processes: int
  process_id: int
  local_device_ids: list[int] | None


def expand_hostlist(hostlist: str) -> list[str]:
  """SLURM's compressed host list, e.g. 'node[01-03,07],login1' -> node01..node03, node07, login1."""
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


def under_slurm(environ: Mapping[str, str]) -> bool:
  """True inside a SLURM job step (srun sets SLURM_PROCID for every task)."""
  return "SLURM_PROCID" in environ and "SLURM_JOB_ID" in environ


def _read(environ: Mapping[str, str], *names: str) -> str:
  for name in names:
    if name in environ:
      return environ[name]
  raise SetupError(f"--distributed under SLURM needs {' or '.join(names)}; start the "
                   "processes with srun inside the batch job (launch/slurm.sbatch)")


def slurm_arguments(environ: Mapping[str, str]) -> DistributedArguments:
  """The coordinator (first node, a port chosen by job id), process count, this process's
  index and its local devices."""
  nodes = expand_hostlist(_read(environ, "SLURM_JOB_NODELIST", "SLURM_NODELIST"))
  num_processes = int(_read(environ, "SLURM_NTASKS", "SLURM_NPROCS"))
  port = _PORT_BASE + int(_read(environ, "SLURM_JOB_ID")) % 4096
  several_per_node = num_processes > len(nodes)
  return DistributedArguments(
      coordinator_address=f"{nodes[0]}:{port}",
      num_processes=num_processes,
      process_id=int(_read(environ, "SLURM_PROCID")),
      local_device_ids=[int(_read(environ, "SLURM_LOCALID"))] if several_per_node else None,
  )


def initialize_slurm(environ: Mapping[str, str]) -> None:
  """Joins the job's processes with the arguments `slurm_arguments` reads."""
  jax.distributed.initialize(**dataclasses.asdict(slurm_arguments(environ)),
                             initialization_timeout=120)
