"""SLURM's variables, faked, and what jax.distributed.initialize would be given."""

import jax
import pytest

from mlvae_jax.training import cluster_env
from mlvae_jax.training.workdir import SetupError

PORT_OF_JOB_4100 = 65536 - 4096 + 4100 % 4096


def test_compressed_host_lists_expand_in_order_with_zero_padding():
  assert cluster_env.expand_hostlist("node[01-03,07],login1") == [
      "node01", "node02", "node03", "node07", "login1"]
  assert cluster_env.expand_hostlist("a[1-2]-ib[0-1]") == ["a1-ib0", "a1-ib1", "a2-ib0", "a2-ib1"]


def test_compressed_tasks_per_node_expand_in_node_order():
  assert cluster_env.expand_tasks_per_node("4(x2),2") == [4, 4, 2]
  assert cluster_env.expand_tasks_per_node("1") == [1]
  with pytest.raises(SetupError, match=r"cannot read '4x2'"):
    cluster_env.expand_tasks_per_node("4x2")


def _job(**overrides):
  """Task 5 of a batch job of 3 nodes x 4 tasks, as srun's environment would show it."""
  environ = {"SLURM_JOB_ID": "4100", "SLURM_JOB_NODELIST": "node[01-03]", "SLURM_NTASKS": "12",
             "SLURM_TASKS_PER_NODE": "4(x3)", "SLURM_PROCID": "5", "SLURM_NODEID": "1",
             "SLURM_LOCALID": "1"}
  environ.update(overrides)
  return {name: value for name, value in environ.items() if value is not None}


def test_one_task_per_gpu_takes_the_gpu_of_its_local_id_and_the_first_node_coordinates():
  args = cluster_env.slurm_arguments(_job())
  assert args.coordinator_address == f"node01:{PORT_OF_JOB_4100}"
  assert (args.num_processes, args.process_id, args.local_device_ids) == (12, 5, [1])


def test_one_task_per_node_takes_all_its_devices():
  args = cluster_env.slurm_arguments(_job(SLURM_NTASKS="3", SLURM_TASKS_PER_NODE="1(x3)",
                                          SLURM_PROCID="2", SLURM_NODEID="2", SLURM_LOCALID="0"))
  assert (args.num_processes, args.process_id, args.local_device_ids) == (3, 2, None)


def test_tasks_given_their_own_gpus_take_all_they_see():
  args = cluster_env.slurm_arguments(_job(SLURM_GPUS_PER_TASK="1"))
  assert (args.process_id, args.local_device_ids) == (5, None)


def test_the_steps_layout_wins_over_the_jobs():
  """srun may run a step on part of the allocation; its SLURM_STEP_* variables say which."""
  args = cluster_env.slurm_arguments(_job(
      SLURM_STEP_NODELIST="node[02-03]", SLURM_STEP_TASKS_PER_NODE="2,1",
      SLURM_STEP_NUM_TASKS="3", SLURM_PROCID="2", SLURM_NODEID="1", SLURM_LOCALID="0"))
  assert args.coordinator_address == f"node02:{PORT_OF_JOB_4100}"
  assert (args.num_processes, args.process_id, args.local_device_ids) == (3, 2, None)


def test_jax_coordinator_port_replaces_the_port_of_the_job_id():
  args = cluster_env.slurm_arguments(_job(JAX_COORDINATOR_PORT="12345"))
  assert args.coordinator_address == "node01:12345"


def test_a_missing_variable_is_named_in_one_line():
  with pytest.raises(SetupError, match="SLURM_STEP_NUM_TASKS or SLURM_NTASKS or SLURM_NPROCS"):
    cluster_env.slurm_arguments(_job(SLURM_NTASKS=None))
  assert cluster_env.under_slurm(_job()) and not cluster_env.under_slurm({})


@pytest.mark.parametrize("overrides, says", [
    ({"SLURM_NTASKS": "11"}, "11 tasks, but tasks per node '4(x3)' add up to 12"),
    ({"SLURM_TASKS_PER_NODE": "4(x2)"}, "'4(x2)' name 2 nodes, the node list 'node[01-03]' 3"),
    ({"SLURM_PROCID": "12"}, "SLURM_PROCID=12 is not one of the 12 tasks"),
    ({"SLURM_NODEID": "3"}, "SLURM_NODEID=3 is not one of the 3 nodes"),
    ({"SLURM_LOCALID": "4"}, "SLURM_LOCALID=4 but node 1 runs 4 tasks"),
    ({"SLURM_PROCID": "five"}, "SLURM_PROCID='five' is not an integer"),
    ({"SLURM_JOB_NODELIST": "node[01-x]"}, "cannot read the range '01-x'"),
])
def test_inconsistent_variables_end_in_one_line_naming_them(overrides, says):
  with pytest.raises(SetupError) as raised:
    cluster_env.slurm_arguments(_job(**overrides))
  assert says in str(raised.value) and "\n" not in str(raised.value)


@pytest.fixture
def recorded(monkeypatch):
  """What jax.distributed.initialize is called with (nothing is initialised)."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **kw: calls.append((a, kw)))
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  return calls


def test_distributed_under_slurm_gives_jax_every_argument_and_no_detection_of_its_own(recorded):
  cluster_env.initialize(distributed=True, environ=_job())
  assert recorded == [((), {
      "coordinator_address": f"node01:{PORT_OF_JOB_4100}", "num_processes": 12, "process_id": 5,
      "local_device_ids": [1], "cluster_detection_method": "deactivate",
      "initialization_timeout": 120})]


def test_explicit_arguments_win_over_slurms(recorded):
  cluster_env.initialize("head:1234", 2, 1, distributed=True, environ=_job())
  assert recorded[0][1]["coordinator_address"] == "head:1234"
  assert (recorded[0][1]["num_processes"], recorded[0][1]["process_id"]) == (2, 1)
  with pytest.raises(SetupError, match=r"process 5 of 2: .* check --process_id"):
    cluster_env.initialize(num_processes=2, distributed=True, environ=_job())


def test_without_distributed_slurms_variables_are_not_read(recorded):
  cluster_env.initialize(distributed=False, environ=_job())
  assert recorded == []


def test_distributed_outside_slurm_leaves_detection_to_jax(recorded):
  """On a Cloud TPU pod JAX finds the workers itself from no arguments."""
  cluster_env.initialize(distributed=True, environ={})
  assert recorded == [((None, None, None), {"initialization_timeout": 120})]
