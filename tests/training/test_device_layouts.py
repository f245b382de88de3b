"""Layouts drawn on the devices (feed/layouts.py) against the host path's policies: every
drawn layout meets the batch contract, no row comes twice within an epoch, groups hold one
value with the policy's sizes, batches are as full as the host's, every row is reachable,
held-out groups are never drawn, draws are a function of (seed, step), processes draw
their own shards, and the keyed permutation is a bijection."""

import functools

import jax
import numpy as np
import pytest
from hypothesis import given, strategies as st

from mlvae_jax import data
from mlvae_jax.groups import validate_batch
from mlvae_jax.training.feed import layouts
from tests.training.policy_cases import POLICIES, make_config

EPOCHS = 30  # enough for every row of the digits split to be drawn under every policy
MEAN_RTOL = 0.1  # device and host means of group sizes / counts / rows agree this closely


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return tmp_path_factory.getbasetemp() / "mlvae_tfds"


def device_layouts(batcher, steps):
  """(rows, group_ids, mask, codes) of each step, drawn on the device, pulled back."""
  plan = layouts.make_plan(batcher)
  table = layouts.tables(batcher)
  draw = jax.jit(jax.vmap(functools.partial(layouts.draw, plan), in_axes=(None, 0)))
  rows, group_ids, mask = jax.device_get(draw(table, np.asarray(steps, np.int32)))
  codes = batcher.shard_codes[batcher.process_index][rows]
  return [dict(rows=r, group_ids=g, mask=m, labels=c)
          for r, g, m, c in zip(rows, group_ids, mask, codes)]


def host_layouts(batcher, epochs=1):
  steps = range(sum(batcher.batches_in_epoch(e) for e in range(epochs)))
  return [batcher.layout(step) for step in steps]


def group_sizes(layout):
  return np.bincount(layout["group_ids"][layout["mask"]])


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_drawn_layouts_follow_the_policy_like_the_host_path(data_root, policy):
  config = make_config(data_root, **POLICIES[policy])
  batcher = data.make_batcher(config, "train", seed=3)
  plan = layouts.make_plan(batcher)
  drawn = device_layouts(batcher, range(EPOCHS * plan.batches_per_epoch))
  host = host_layouts(batcher, epochs=EPOCHS)
  for layout in drawn:
    validate_batch(dict(layout, x=layout["rows"]), config.num_groups)
  per_epoch = plan.batches_per_epoch
  for epoch in range(EPOCHS):  # without replacement within an epoch
    rows = np.concatenate([l["rows"][l["mask"]]
                           for l in drawn[epoch * per_epoch:(epoch + 1) * per_epoch]])
    assert len(np.unique(rows)) == len(rows), f"a row drawn twice in epoch {epoch}"
  for layout in drawn:  # a group holds one value (iid: one row)
    ids, labels = layout["group_ids"][layout["mask"]], layout["labels"][layout["mask"]]
    for group in np.unique(ids):
      members = labels[ids == group]
      assert len(members) == 1 if policy == "iid" else len(np.unique(members)) == 1
  sizes = [np.concatenate([group_sizes(l) for l in layouts_]) for layouts_ in (drawn, host)]
  k_min, k_max = {"fixed": (5, 5), "uniform": (2, 9), "natural": (1, 64), "iid": (1, 1)}[policy]
  assert sizes[0].min() >= k_min and sizes[0].max() <= k_max
  np.testing.assert_allclose(sizes[0].mean(), sizes[1].mean(), rtol=MEAN_RTOL)
  full = [np.mean([l["mask"].sum() for l in layouts_]) for layouts_ in (drawn, host)]
  np.testing.assert_allclose(full[0], full[1], rtol=MEAN_RTOL)
  if policy == "fixed":  # every batch min(G, N // k) groups of k, as on the host
    assert {l["mask"].sum() for l in drawn} == {l["mask"].sum() for l in host} == {60}
  reached = np.unique(np.concatenate([l["rows"][l["mask"]] for l in drawn]))
  np.testing.assert_array_equal(reached, np.arange(len(batcher.shard_codes[0])))


def test_held_out_groups_are_never_drawn(data_root):
  config = make_config(data_root, unseen_groups="3,7", **POLICIES["uniform"])
  batcher = data.make_batcher(config, "train", seed=0)
  plan = layouts.make_plan(batcher)
  drawn = device_layouts(batcher, range(5 * plan.batches_per_epoch))
  labels = np.unique(np.concatenate([l["labels"][l["mask"]] for l in drawn]))
  host = np.unique(np.concatenate([l["labels"][l["mask"]] for l in host_layouts(batcher, 5)]))
  np.testing.assert_array_equal(labels, host)
  unseen = data.load_split(config, "unseen").labels
  assert not np.isin(labels, unseen).any()


def test_draws_are_a_function_of_seed_and_step(data_root):
  config = make_config(data_root, **POLICIES["natural"])
  batcher = data.make_batcher(config, "train", seed=1)
  first, again = device_layouts(batcher, [0, 1]), device_layouts(batcher, [1, 0])
  np.testing.assert_array_equal(first[0]["rows"], again[1]["rows"])
  assert not np.array_equal(first[0]["rows"], first[1]["rows"])
  other_seed = device_layouts(data.make_batcher(config, "train", seed=2), [0])
  assert not np.array_equal(first[0]["rows"], other_seed[0]["rows"])


@pytest.mark.parametrize("policy", ["fixed", "natural"])
def test_each_process_draws_from_its_own_shard_into_its_own_group_slots(data_root, policy):
  config = make_config(data_root, **POLICIES[policy])
  config.num_groups = 32  # 16 slots a process: room for every digit under 'natural'
  for p in range(2):
    batcher = data.make_batcher(config, "train", seed=4, process_index=p, process_count=2)
    (layout,) = device_layouts(batcher, [3])
    validate_batch(dict(layout, x=layout["rows"]), config.num_groups)
    ids = layout["group_ids"][layout["mask"]]
    assert ids.min() >= p * 16 and ids.max() < (p + 1) * 16
    assert layout["rows"].max() < len(batcher.shard_codes[p])


MAX_SIZE = 3000  # one compile: indices past `size` are computed at 0 and ignored


@given(size=st.integers(1, MAX_SIZE), key=st.integers(0, 2**32 - 1))
def test_the_keyed_permutation_is_a_bijection(size, key):
  index = np.where(np.arange(MAX_SIZE) < size, np.arange(MAX_SIZE), 0).astype(np.int32)
  image = jax.device_get(_permute(index, np.int32(size), np.uint32(key)))[:size]
  np.testing.assert_array_equal(np.sort(image), np.arange(size))


_permute = jax.jit(layouts.permute)
