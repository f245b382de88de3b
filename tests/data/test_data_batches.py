"""Grouped batches: the batch contract under every policy, determinism and resume,
multi-host shards, splits, and the errors of bad configs. All on the real digits data."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import configs
from mlvae_jax import data
from mlvae_jax import groups
from mlvae_jax.data import grouping, policies, sources, splits
from mlvae_jax.groups import validate_batch


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  """One prepared-data cache per test session (same path in every data test module)."""
  return tmp_path_factory.getbasetemp() / "mlvae_tfds"


def make_config(root, **overrides):
  config = configs.base_config().data
  config.update(dict(data_dir=str(root), batch_size=64, num_groups=8, group_size=8))
  config.update(overrides)
  return config


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_same_batches(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def group_sizes(batch, num_groups):
  return np.bincount(batch["group_ids"][batch["mask"]], minlength=num_groups)


POLICY_CASES = st.sampled_from([
    dict(group_policy="fixed", group_size=4, batch_size=32, num_groups=8),
    dict(group_policy="fixed", group_size=5, batch_size=32, num_groups=8),  # 6 groups, 2 pad
    dict(group_policy="fixed", group_size=8, batch_size=64, num_groups=4),  # G limits
    dict(group_policy="uniform", group_size_min=2, group_size_max=9, batch_size=48, num_groups=12),
    dict(group_policy="uniform", group_size_min=1, group_size_max=3, batch_size=16, num_groups=16),
    dict(group_policy="natural", batch_size=40, num_groups=10),
    dict(group_policy="iid", batch_size=24, num_groups=24),
])


@settings(max_examples=20, deadline=None)
@given(case=POLICY_CASES, seed=st.integers(0, 2**31 - 1), split=st.sampled_from(["train", "test"]))
def test_every_batch_meets_the_contract(data_root, case, seed, split):
  config = make_config(data_root, **case)
  n, g = case["batch_size"], case["num_groups"]
  iterator = data.make_batch_iterator(config, split, seed=seed)
  assert iterator.observation_shape == (8, 8, 1)
  for batch in take(iterator, 12):  # crosses the epoch boundary of the test split
    validate_batch(batch, g)
    assert batch["x"].shape == (n, 8, 8, 1) and batch["x"].dtype == np.float32
    assert batch["group_ids"].dtype == np.int32 and batch["labels"].dtype == np.int32
    valid = batch["mask"]
    assert 0.0 <= batch["x"].min() and batch["x"].max() <= 1.0
    assert not batch["x"][~valid].any() and (batch["labels"][~valid] == -1).all()
    sizes = group_sizes(batch, g)
    used = sizes[sizes > 0]
    policy = case["group_policy"]
    if policy == "iid":
      assert valid.all() and (sizes == 1).all()
    elif policy == "natural":
      assert valid.all()
    elif policy == "fixed":
      k = case["group_size"]
      assert (used == k).all() and len(used) == min(g, n // k)
    else:
      assert used.min() >= case["group_size_min"] and used.max() <= case["group_size_max"]
    for slot in np.unique(batch["group_ids"][valid]):  # a group shares one label
      assert len(np.unique(batch["labels"][batch["group_ids"] == slot])) == 1
    if policy == "natural":  # ... and a label is one group
      assert len(used) == len(np.unique(batch["labels"]))


@pytest.mark.parametrize("policy", policies.POLICIES)
def test_an_epoch_uses_each_example_at_most_once(policy):
  codes = np.random.default_rng(0).integers(0, 7, 500)
  rule = policies.Policy(policy, 2, 6) if policy == "uniform" else policies.Policy(policy, 4, 4)
  plan = policies.plan_epoch(rule, codes, np.random.default_rng(1), 40, 40, drop_remainder=False)
  assert len(np.unique(plan.rows)) == len(plan.rows)
  if policy in ("natural", "iid"):
    assert len(plan.rows) == len(codes)  # every example, once
  else:  # at most one short tail per value is left out
    assert len(plan.rows) > len(codes) - 7 * rule.k_min


def test_same_seed_same_batches_other_seed_other_batches(data_root):
  config = make_config(data_root)
  first = take(data.make_batch_iterator(config, "train", seed=3), 5)
  assert_same_batches(first, take(data.make_batch_iterator(config, "train", seed=3), 5))
  other = take(data.make_batch_iterator(config, "train", seed=4), 5)
  assert not np.array_equal(first[0]["x"], other[0]["x"])


@pytest.mark.parametrize("policy", ["fixed", "uniform", "natural"])
def test_resume_mid_epoch_and_across_epochs(data_root, policy):
  config = make_config(data_root, group_policy=policy, num_groups=16)
  iterator = data.make_batch_iterator(config, "train", seed=1)
  take(iterator, 7)  # mid-epoch: ~20 batches per epoch
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 30)  # into the next epochs
  resumed = data.make_batch_iterator(config, "train", seed=1)
  resumed.set_state(state)
  assert_same_batches(expected, take(resumed, 30))
  assert resumed.get_state()["step"] == 37


def test_state_from_another_config_is_refused(data_root):
  state = data.make_batch_iterator(make_config(data_root), "train", seed=1).get_state()
  other = data.make_batch_iterator(make_config(data_root, group_size=4), "train", seed=1)
  with pytest.raises(data.DataError, match="different data config"):
    other.set_state(state)


def test_worker_processes_give_the_same_batches(data_root):
  config = make_config(data_root, group_policy="uniform")
  expected = take(data.make_batch_iterator(config, "train", seed=2), 6)
  config.num_workers = 2
  iterator = data.make_batch_iterator(config, "train", seed=2)
  assert_same_batches(expected[:3], take(iterator, 3))
  state = iterator.get_state()
  iterator.set_state(state)
  assert_same_batches(expected[3:], take(iterator, 3))


@pytest.mark.parametrize("policy", ["natural", "iid", "fixed"])
def test_one_epoch_covers_the_split(data_root, policy):
  config = make_config(data_root, group_policy=policy, group_size=2,
                       num_groups=64 if policy == "iid" else 16)
  test = data.load_split(config, "test")
  batches = list(data.make_batch_iterator(config, "test", seed=0, num_epochs=1))
  labels = np.concatenate([b["labels"][b["mask"]] for b in batches])
  expected = np.bincount(test.labels, minlength=10)
  if policy == "fixed":  # odd tails of a class are left out
    assert (expected - np.bincount(labels, minlength=10) <= 1).all()
  else:
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), expected)
    assert sorted(map(bytes, np.concatenate([b["x"][b["mask"]] for b in batches]))) == sorted(
        map(bytes, test.x))


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_read_disjoint_shards_with_global_ids(data_root, process_count):
  config = make_config(data_root, batch_size=64, num_groups=16, group_size=4)
  iterators = [data.make_batch_iterator(config, "train", seed=5, process_index=p,
                                        process_count=process_count, num_epochs=1)
               for p in range(process_count)]
  local_g = 16 // process_count
  seen = []
  for step_batches in zip(*iterators):
    for p, batch in enumerate(step_batches):
      assert len(batch["x"]) == 64 // process_count
      validate_batch(batch, 16)
      ids = batch["group_ids"][batch["mask"]]
      assert ((ids >= p * local_g) & (ids < (p + 1) * local_g)).all()
      seen.extend(map(bytes, batch["x"][batch["mask"]]))
  assert len(seen) == len(set(seen))  # no example in two shards (digits has no twins)
  # Full batches (forever mode, fixed k fills N) concatenate into a valid global batch.
  forever = [data.make_batch_iterator(config, "train", seed=5, process_index=p,
                                      process_count=process_count) for p in range(process_count)]
  for _ in range(3):
    parts = [next(it) for it in forever]
    validate_batch({k: np.concatenate([b[k] for b in parts]) for k in parts[0]}, 16)


MULTI_HOST_CASES = {
    # Sizes 1..5 drawn per group: each process packs its own groups, so the processes' batches
    # hold different numbers of groups and one process runs out of batches first.
    "uniform": dict(group_policy="uniform", group_size_min=1, group_size_max=5, batch_size=48,
                    num_groups=16, split="test"),
    # Shards of 288, 288, 287 and 287 train examples in batches of 7: processes 2 and 3 end
    # one batch earlier; groups are the digit classes a random batch happens to hold.
    "natural": dict(group_policy="natural", batch_size=28, num_groups=28, validation_fraction=0.2,
                    split="train"),
}


@pytest.mark.parametrize("policy", MULTI_HOST_CASES)
def test_processes_stay_in_lockstep_under_ragged_policies(data_root, policy):
  """An epoch over 4 processes: every process yields the same number of batches (the ones a
  process lacks are all padding), each host block meets the contract with global ids, the
  global batch's group sizes are the hosts' own, and the epoch covers the split once."""
  case = dict(MULTI_HOST_CASES[policy])
  split = case.pop("split")
  config = make_config(data_root, **case)
  n, g, processes = case["batch_size"], case["num_groups"], 4
  per_process = [list(data.make_batch_iterator(config, split, seed=5, process_index=p,
                                               process_count=processes, num_epochs=1))
                 for p in range(processes)]
  assert len({len(batches) for batches in per_process}) == 1
  uneven_steps = padding_batches = 0
  for step_batches in zip(*per_process):
    for p, batch in enumerate(step_batches):
      validate_batch(batch, g)
      assert len(batch["x"]) == n // processes
      ids = batch["group_ids"][batch["mask"]]
      assert ((ids >= p * g // processes) & (ids < (p + 1) * g // processes)).all()
      padding_batches += not batch["mask"].any()
    host_sizes = sum(group_sizes(batch, g) for batch in step_batches)
    whole = {k: np.concatenate([b[k] for b in step_batches]) for k in ("group_ids", "mask")}
    np.testing.assert_array_equal(
        groups.group_sizes(whole["group_ids"], g, whole["mask"]), host_sizes)
    uneven_steps += len({(group_sizes(b, g) > 0).sum() for b in step_batches}) > 1
    if policy == "uniform":
      assert host_sizes.max() <= case["group_size_max"]
  assert uneven_steps and padding_batches  # the cases this test is about did occur
  seen = [bytes(x) for batches in per_process for b in batches for x in b["x"][b["mask"]]]
  assert sorted(seen) == sorted(map(bytes, data.load_split(config, split).x))


@pytest.mark.parametrize("policy", MULTI_HOST_CASES)
def test_every_process_resumes_its_own_stream(data_root, policy):
  case = dict(MULTI_HOST_CASES[policy])
  split = case.pop("split")
  config = make_config(data_root, **case)

  def iterators():
    return [data.make_batch_iterator(config, split, seed=5, process_index=p, process_count=4)
            for p in range(4)]

  running = iterators()
  for iterator in running:
    take(iterator, 9)  # the uniform case's first epoch (9 batches when training); 6 more cross it
  states = [json.loads(json.dumps(iterator.get_state())) for iterator in running]
  resumed = iterators()
  for iterator, state in zip(resumed, states):
    iterator.set_state(state)
  for before, after in zip(running, resumed):
    assert_same_batches(take(before, 6), take(after, 6))


def _rows(config, split):
  examples = sources.load_examples(config)
  coding = grouping.group_coding(examples.fields, config.group_by, config.name)
  return splits.split_rows(examples, coding, config, split), coding


def test_splits_are_disjoint_and_cover_the_dataset(data_root):
  config = make_config(data_root, validation_fraction=0.2)
  rows = {name: _rows(config, name)[0] for name in ("train", "validation", "test")}
  everything = np.concatenate(list(rows.values()))
  assert len(np.unique(everything)) == len(everything) == 1797
  assert len(rows["validation"]) == round(0.2 * (1797 - 360))


def test_unseen_digit_classes_never_reach_the_other_splits(data_root):
  config = make_config(data_root, unseen_groups="3,7")
  rows = {name: _rows(config, name) for name in splits.SPLITS}
  labels = {name: coding.codes[r] for name, (r, coding) in rows.items()}
  assert set(labels["unseen"]) == {3, 7}
  assert len(labels["unseen"]) == (np.isin(rows["train"][1].codes, [3, 7])).sum()
  for name in ("train", "validation", "test"):
    assert not np.isin(labels[name], [3, 7]).any()
    assert not np.intersect1d(rows[name][0], rows["unseen"][0]).size
  batch = next(data.make_batch_iterator(config, "unseen", seed=0))
  assert set(batch["labels"][batch["mask"]]) <= {3, 7}


def test_unseen_shape_combinations(data_root):
  config = make_config(data_root, name="grouped_shapes", num_examples=3000,
                       group_by="shape,scale", unseen_groups="0:0, 2:5", group_size=4)
  unseen = data.load_split(config, "unseen")
  pairs = {tuple(f) for f in unseen.factors[:, :2]}
  assert pairs == {(0, 0), (2, 5)}
  train = data.load_split(config, "train")
  assert not ({tuple(f) for f in train.factors[:, :2]} & pairs)
  batch = next(data.make_batch_iterator(config, "train", seed=0))
  assert batch["factors"].shape == (64, 6) and batch["factors"].dtype == np.int32


BAD_CONFIGS = [
    (dict(name="cifar"), "unknown dataset data.name='cifar'"),
    (dict(group_by="identity"), r"no label field \['identity'\].*available fields: label"),
    (dict(group_policy="clusters"), "unknown data.group_policy='clusters'"),
    (dict(group_policy="uniform", group_size_min=5, group_size_max=3), "1 <= k_min <= k_max"),
    (dict(group_size=200, batch_size=256, num_groups=2), "fewer members .* than policy 'fixed'"),
    (dict(group_size=16, batch_size=8), "batch of N = 8 rows cannot hold a group of 16"),
    (dict(group_policy="iid", batch_size=64, num_groups=32), "G .32 slots. must be >= N"),
    (dict(group_policy="natural", num_groups=4), "up to 10 distinct group values.*only 4 slots"),
    (dict(batch_size=0), "must be >= 1"),
    (dict(unseen_groups="3,11"), r"unseen_groups names group values \['11'\]"),
    (dict(validation_fraction=1.0), "must be in \\[0, 1\\)"),
    (dict(name="grouped_shapes", resolution=48), "resolution=48 is not supported"),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS)
def test_bad_configs_raise_clear_errors(data_root, overrides, message):
  with pytest.raises(data.DataError, match=message):
    data.make_batch_iterator(make_config(data_root, **overrides), "train", seed=0)


def test_bad_requests_raise_clear_errors(data_root):
  config = make_config(data_root)
  with pytest.raises(data.DataError, match="resolution=16 is not supported"):
    data.observation_shape(make_config(data_root, name="grouped_shapes", resolution=16))
  with pytest.raises(data.DataError, match="unknown dataset data.name='svhn'"):
    data.observation_shape(make_config(data_root, name="svhn"))
  with pytest.raises(data.DataError, match="unknown split 'dev'"):
    data.make_batch_iterator(config, "dev", seed=0)
  with pytest.raises(data.DataError, match="set data.unseen_groups"):
    data.load_split(config, "unseen")
  with pytest.raises(data.DataError, match="validation_fraction is 0"):
    data.load_split(make_config(data_root, validation_fraction=0.0), "validation")
  with pytest.raises(data.DataError, match="divisible by the number of processes"):
    data.make_batch_iterator(config, "train", seed=0, process_index=0, process_count=3)
  with pytest.raises(data.DataError, match="fewer examples per process"):
    data.make_batch_iterator(make_config(data_root, batch_size=512, num_groups=64),
                             "test", seed=0)
  with pytest.raises(data.DataError, match="process 0 of 4.*fewer members"):
    data.make_batch_iterator(make_config(data_root, group_size=10, batch_size=64),
                             "test", seed=0, process_index=1, process_count=4)
