"""Resuming a run on another mesh: a run checkpointed on 8 devices continues on 2 or 1 from
its checkpoint (not from scratch), with the batches and results of the uninterrupted run.

(Another process count is refused, in tests/training/test_multihost.py, which has the two-process
run to resume.)
"""

import json
import shutil

import jax
import numpy as np
import pytest

from mlvae_jax import train
from tests.test_launch import snapshot
from tests.training.test_train import PARITY_RTOL, eight_device_run, losses, params_at, smoke_config  # noqa: F401


@pytest.mark.slow
@pytest.mark.parametrize("devices", [2, 1])
def test_a_run_checkpointed_on_eight_devices_resumes_on_fewer(eight_device_run, tmp_path, devices):
  workdir8, config8, _ = eight_device_run
  shutil.copytree(workdir8, tmp_path, dirs_exist_ok=True)
  shutil.rmtree(tmp_path / "checkpoints" / "4")  # stopped after the checkpoint at step 2
  checkpoint_2 = snapshot(tmp_path / "checkpoints" / "2")
  config = smoke_config(**{"mesh.data": devices, "train.log_every": 1})
  train.train_and_evaluate(config, str(tmp_path))

  assert json.loads((tmp_path / "config.json").read_text())["mesh"]["data"] == devices
  assert snapshot(tmp_path / "checkpoints" / "2") == checkpoint_2  # resumed: step 2 not redone
  resumed, uninterrupted = losses(tmp_path), losses(workdir8)
  assert sorted(resumed) == [1, 2, 3, 4]
  np.testing.assert_allclose([resumed[s] for s in (3, 4)], [uninterrupted[s] for s in (3, 4)],
                             rtol=PARITY_RTOL)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_at(tmp_path, config, 4), params_at(workdir8, config8, 4))
