"""SLURM's variables, faked, and what jax.distributed.initialize would be given."""

import pytest

from mlvae_jax.training import cluster_env
from mlvae_jax.training.workdir import SetupError


def test_compressed_host_lists_expand_in_order_with_zero_padding():
  assert cluster_env.expand_hostlist("node[01-03,07],login1") == [
      "node01", "node02", "node03", "node07", "login1"]
  assert cluster_env.expand_hostlist("a[1-2]-ib[0-1]") == ["a1-ib0", "a1-ib1", "a2-ib0", "a2-ib1"]


def _job(**overrides):
  environ = {"SLURM_JOB_ID": "4100", "SLURM_JOB_NODELIST": "node[01-03]", "SLURM_NTASKS": "12",
             "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
  environ.update(overrides)
  return environ


def test_one_task_per_gpu_takes_the_gpu_of_its_local_id_and_the_first_node_coordinates():
  args = cluster_env.slurm_arguments(_job())
  assert args.coordinator_address == f"node01:{65536 - 4096 + 4100 % 4096}"
  assert (args.num_processes, args.process_id, args.local_device_ids) == (12, 5, [1])


def test_one_task_per_node_takes_all_its_devices():
  args = cluster_env.slurm_arguments(_job(SLURM_NTASKS="3", SLURM_PROCID="2"))
  assert (args.num_processes, args.process_id, args.local_device_ids) == (3, 2, None)


def test_a_missing_variable_is_named_in_one_line():
  environ = _job()
  del environ["SLURM_NTASKS"]
  with pytest.raises(SetupError, match="SLURM_NTASKS or SLURM_NPROCS"):
    cluster_env.slurm_arguments(environ)
  assert cluster_env.under_slurm(_job()) and not cluster_env.under_slurm({})
