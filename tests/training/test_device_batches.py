"""The split kept on the devices: each step's batch is the rows its drawn layout names,
gathered bit for bit (every policy, 1 and 8 devices) and within the batch contract, the
data state is the step, each process keeps its own shard and tables in one shape, and the
resident/host decision of config.data.device_resident."""

import functools

import jax
import numpy as np
import pytest

from mlvae_jax import configs, data
from mlvae_jax.data import pipeline
from mlvae_jax.groups import validate_batch
from mlvae_jax.training import sharding
from mlvae_jax.training.feed import layouts, resident
from tests.training.policy_cases import POLICIES, make_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "mlvae_tfds"


def mesh_of(devices):
  config = configs.base_config().mesh
  config.data = devices
  return sharding.make_mesh(config)


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_gathered_batches_are_the_drawn_rows_of_the_shard_bitwise(data_root, policy, devices):
  config = make_config(data_root, **POLICIES[policy])
  batcher = data.make_batcher(config, "train", seed=3)
  plan = layouts.make_plan(batcher)
  mesh = mesh_of(devices)
  split = resident.put_split(batcher, mesh)
  batch_of = jax.jit(functools.partial(resident.step_batch, plan=plan,
                                       pixel_scale=batcher.pixel_scale, mesh=mesh))
  table = layouts.tables(batcher)
  draw = jax.jit(functools.partial(layouts.draw, plan))
  shard = batcher.shard_images()
  for step in [0, 1, plan.batches_per_epoch + 1]:  # into the second epoch
    rows, group_ids, mask = jax.device_get(draw(table, step))
    x = np.where(mask[:, None, None, None], shard[rows].astype(np.float32) * batcher.pixel_scale,
                 np.float32(0))
    gathered = jax.device_get(batch_of({resident.ACTIVE_KEY: np.bool_(True)}, split,
                                       np.int32(step)))
    np.testing.assert_array_equal(gathered["x"], x, err_msg=f"x at step {step}")
    np.testing.assert_array_equal(gathered["group_ids"], group_ids)
    np.testing.assert_array_equal(gathered["mask"], mask)
    validate_batch(gathered, config.num_groups)
  unused = jax.device_get(batch_of({resident.ACTIVE_KEY: np.bool_(False)}, split, np.int32(1)))
  assert not unused["mask"].any() and not unused["x"].any()
  assert (unused["group_ids"] == config.num_groups).all()


def test_the_data_state_is_the_step_and_refuses_another_config(data_root):
  config = make_config(data_root, **POLICIES["uniform"])
  fingerprint = resident.fingerprint(pipeline.fingerprint(config, "train", 1, None))
  data_step = resident.DataStep(fingerprint)
  data_step.step += 3
  again = resident.DataStep(fingerprint)
  again.set_state(data_step.get_state())
  assert again.step == 3
  host = data.make_batch_iterator(config, "train", seed=1)
  with pytest.raises(data.DataError, match="different data config"):
    again.set_state(host.get_state())  # the host path's batches are not the devices'


def test_a_split_without_one_full_batch_is_refused(data_root):
  config = make_config(data_root, batch_size=2048, num_groups=2048, group_policy="iid")
  batcher = data.make_batcher(config, "train", seed=0)
  with pytest.raises(data.DataError, match="cannot give one batch of 2048 rows per process"):
    layouts.make_plan(batcher)


def test_every_process_keeps_its_own_shard_and_tables_in_one_shape(data_root):
  config = make_config(data_root, batch_size=64, num_groups=16, group_size=4)
  batchers = [data.make_batcher(config, "train", seed=5, process_index=p, process_count=4)
              for p in range(4)]
  assert len({len(b.shard_codes[b.process_index]) for b in batchers}) == 2  # unequal shards
  shards = [b.shard_images() for b in batchers]
  assert len({s.shape for s in shards}) == 1
  assert all(b.shard_nbytes == s.nbytes for b, s in zip(batchers, shards))
  tables = [layouts.tables(b) for b in batchers]
  assert len({tuple((k, v.shape) for k, v in sorted(t.items())) for t in tables}) == 1
  plans = {layouts.make_plan(b) for b in batchers}
  assert len(plans) == 1  # every process agrees on the epoch's length
  split = data.load_split(config, "train")
  assert sum(len(b.shard_codes[b.process_index]) for b in batchers) == len(split.x)


@pytest.mark.parametrize("mode, needed, available, kept", [
    ("off", 1, 10**9, False),
    ("auto", 10**6, 10**9, True),
    ("auto", 6 * 10**8, 10**9, False),  # more than AUTO_SHARE of what is free
    ("on", 6 * 10**8, 10**9, True),
])
def test_resident_or_not(mode, needed, available, kept):
  assert resident.keep_resident(mode, needed, available) is kept


def test_forcing_a_split_that_cannot_fit_says_what_it_needs():
  with pytest.raises(data.DataError, match=r"needs 3\.00 GiB per device .* 1\.00 GiB are free"):
    resident.keep_resident("on", 3 * 2**30, 2**30)
  with pytest.raises(data.DataError, match="device_resident='sometimes' is unknown"):
    resident.keep_resident("sometimes", 1, 1)


