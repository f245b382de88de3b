"""Device-resident data: batches gathered on the devices equal the host path's bit for bit
(every policy, 1 and 8 devices), the iterator state is the host path's, each process keeps
its own shard, and the resident/host decision of config.data.device_resident."""

import functools

import jax
import numpy as np
import pytest

from mlvae_jax import configs, data
from mlvae_jax.training import sharding
from mlvae_jax.training.feed import host
from mlvae_jax.training.feed import resident as device_batches
from mlvae_jax.data import pipeline

POLICIES = {
    "fixed": dict(group_policy="fixed", group_size=5),  # padding rows in every batch
    "uniform": dict(group_policy="uniform", group_size_min=2, group_size_max=9),
    "natural": dict(group_policy="natural"),
    "iid": dict(group_policy="iid", num_groups=64),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "mlvae_tfds"


def make_config(root, **overrides):
  config = configs.base_config().data
  config.update(dict(data_dir=str(root), batch_size=64, num_groups=16))
  config.update(overrides)
  return config


def mesh_of(devices):
  config = configs.base_config().mesh
  config.data = devices
  return sharding.make_mesh(config)


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_gathered_batches_equal_the_host_batches_bitwise(data_root, policy, devices):
  config = make_config(data_root, **POLICIES[policy])
  batcher = data.make_batcher(config, "train", seed=3)
  mesh = mesh_of(devices)
  images = device_batches.put_images(batcher, mesh)
  gather = jax.jit(functools.partial(device_batches.gather_batch, pixel_scale=batcher.pixel_scale,
                                     mesh=mesh))
  steps = [0, 1, 2, batcher.batches_in_epoch(0) + 1]  # into the second epoch
  for step in steps:
    layout = batcher.layout(step)
    device_layout = host.global_batch(
        {k: layout[k] for k in device_batches.LAYOUT_KEYS}, mesh)
    gathered = jax.device_get(gather(device_layout, images))
    expected = batcher(step)
    if policy == "fixed":  # 12 groups of 5 in 64 rows: padding is gathered too
      assert not expected["mask"].all()
    for key in ("x", "group_ids", "mask"):
      assert gathered[key].dtype == expected[key].dtype
      np.testing.assert_array_equal(gathered[key], expected[key], err_msg=f"{key} at step {step}")


def test_layouts_resume_from_a_host_iterator_state_and_back(data_root):
  config = make_config(data_root, **POLICIES["uniform"])
  host = data.make_batch_iterator(config, "train", seed=1)
  for _ in range(5):
    next(host)
  layouts = device_batches.LayoutIterator(
      data.make_batcher(config, "train", seed=1),
      pipeline.fingerprint(config, "train", 1, None))
  layouts.set_state(host.get_state())
  for _ in range(30):  # across an epoch boundary (~20 batches an epoch)
    layout, batch = next(layouts), next(host)
    for key in ("group_ids", "mask", "labels"):
      np.testing.assert_array_equal(layout[key], batch[key])
  assert layouts.get_state() == host.get_state()
  other = make_config(data_root, **POLICIES["fixed"])
  with pytest.raises(data.DataError, match="different data config"):
    layouts.set_state(data.make_batch_iterator(other, "train", seed=1).get_state())


def test_a_split_without_one_full_batch_is_refused_as_on_the_host(data_root):
  config = make_config(data_root, batch_size=2048, num_groups=256, group_size=8)
  batcher = data.make_batcher(config, "train", seed=0)
  with pytest.raises(data.DataError, match="fewer examples per process"):
    device_batches.LayoutIterator(batcher, pipeline.fingerprint(config, "train", 0, None))


def test_every_process_keeps_its_own_shard_in_one_shape(data_root):
  config = make_config(data_root, batch_size=64, num_groups=16, group_size=4)
  batchers = [data.make_batcher(config, "train", seed=5, process_index=p, process_count=4)
              for p in range(4)]
  assert len({len(b._rows) for b in batchers}) == 2  # unequal shards: the short are padded
  shards = [b.shard_images() for b in batchers]
  assert len({s.shape for s in shards}) == 1
  assert all(b.shard_nbytes == s.nbytes for b, s in zip(batchers, shards))
  for p, batcher in enumerate(batchers):
    layout, batch = batcher.layout(0), batcher(0)
    rows = layout["rows"][layout["mask"]]
    np.testing.assert_array_equal(
        shards[p][rows].astype(np.float32) * batcher.pixel_scale, batch["x"][batch["mask"]])
  split = data.load_split(config, "train")
  assert sum(len(b._rows) for b in batchers) == len(split.x)  # disjoint shards cover the split


@pytest.mark.parametrize("mode, needed, available, resident", [
    ("off", 1, 10**9, False),
    ("auto", 10**6, 10**9, True),
    ("auto", 6 * 10**8, 10**9, False),  # more than AUTO_SHARE of what is free
    ("on", 6 * 10**8, 10**9, True),
])
def test_resident_or_not(mode, needed, available, resident):
  assert device_batches.keep_resident(mode, needed, available) is resident


def test_forcing_a_split_that_cannot_fit_says_what_it_needs():
  with pytest.raises(data.DataError, match=r"needs 3\.00 GiB per device .* 1\.00 GiB are free"):
    device_batches.keep_resident("on", 3 * 2**30, 2**30)
  with pytest.raises(data.DataError, match="device_resident='sometimes' is unknown"):
    device_batches.keep_resident("sometimes", 1, 1)


