"""K steps per jitted call: one call of K steps leaves the parameters of K single steps bit
for bit (1 and 8 devices, host and device-resident data), slots without a valid row are no
steps, one compile serves every group structure, layout and call length, and where calls
end. The loop: the host path under any K trains and logs as today's loop bit for bit, the
resident path the same under any K and resumes under another K, a host checkpoint is not
resumed on the devices, and a run that cannot fit fails before it writes."""

import functools
import types

import jax
import numpy as np
import pytest

from experiments import digits
from mlvae_jax import data
from mlvae_jax.training import device_memory, loop, metrics_writer, nonfinite, sharding
from mlvae_jax.training import setup as setup_lib, step_calls
from mlvae_jax.config_helpers import SetupError
from mlvae_jax.training import feed as train_feed
from mlvae_jax.training.feed import stacking

K = 4
UNROLLED_RTOL = 1e-5  # an unrolled call against single steps: a few float32 roundings
METRIC_RTOL = 1e-6  # a float32 rounding of a logged mean; parameters are compared bit for bit
STEP_KEYS = ("x", "group_ids", "mask")


def make_setup(devices: int, steps_per_call: int = 1, **data_overrides):
  config = digits.get_config("smoke")
  config.mesh.data = devices
  config.train.steps_per_call = steps_per_call
  config.data.update(data_overrides)
  return setup_lib.setup(config)


def guarded_step(setup):
  return nonfinite.guard_step(loop.make_train_step(setup.loss_fn, setup.tx, setup.schedule),
                              setup.config.train)


def jit_call(setup, steps_per_call, to_batch=step_calls.host_batch, data_sharding=None, unroll=1):
  return jax.jit(
      step_calls.scan_steps(guarded_step(setup), steps_per_call, to_batch, unroll),
      in_shardings=(setup.state_shardings, setup.replicated,
                    stacking.input_sharding(setup.mesh, steps_per_call), data_sharding),
      out_shardings=(setup.state_shardings, setup.replicated, setup.replicated),
  )


def fresh(setup):
  return (jax.jit(setup.init, out_shardings=setup.state_shardings)(),
          jax.jit(nonfinite.Health.initial, out_shardings=setup.replicated)())


def host_batches(setup, count):
  iterator = data.make_batch_iterator(setup.config.data, "train", seed=setup.config.seed)
  return [next(iterator) for _ in range(count)]


def single_steps(setup, batches):
  """The reference: today's step, one call per batch; metrics summed as the loop's window."""
  call = jit_call(setup, 1)
  state, health = fresh(setup)
  sums = None
  for batch in batches:
    inputs = stacking.to_devices(stacking.stack([batch], 1, STEP_KEYS),
                                 stacking.input_sharding(setup.mesh, 1))
    state, health, metrics = call(state, health, inputs, None)
    sums = metrics if sums is None else loop.add_trees(sums, metrics)
  return jax.device_get((state, sums))


def assert_trees_equal(actual, expected):
  jax.tree.map(np.testing.assert_array_equal, actual, expected)


@pytest.mark.parametrize("devices, unroll", [(1, 1), (8, 1), (1, K)])  # K: no loop (conv on CPU)
def test_one_call_of_k_steps_equals_k_single_steps_bitwise(devices, unroll):
  setup = make_setup(devices)
  batches = host_batches(setup, K)
  state, health = fresh(setup)
  inputs = stacking.to_devices(stacking.stack(batches, K, STEP_KEYS),
                               stacking.input_sharding(setup.mesh, K))
  state, health, sums = jit_call(setup, K, unroll=unroll)(state, health, inputs, None)
  expected_state, expected_sums = single_steps(setup, batches)
  assert int(state.step) == K
  if unroll == 1:
    assert_trees_equal(jax.device_get(state), expected_state)
    assert_trees_equal(jax.device_get(sums), expected_sums)
  else:  # no loop: XLA may fuse across steps, so values may round differently (1 ulp seen)
    close = functools.partial(np.testing.assert_allclose, rtol=UNROLLED_RTOL, atol=1e-9)
    jax.tree.map(close, jax.device_get(state), expected_state)
    jax.tree.map(close, jax.device_get(sums), expected_sums)


def test_slots_without_a_valid_row_are_no_steps():
  setup = make_setup(1)
  batches = host_batches(setup, 2)
  state, health = fresh(setup)
  inputs = stacking.to_devices(stacking.stack(batches, K, STEP_KEYS),
                               stacking.input_sharding(setup.mesh, K))
  state, health, sums = jit_call(setup, K)(state, health, inputs, None)
  expected_state, expected_sums = single_steps(setup, batches)
  assert int(state.step) == 2
  assert_trees_equal(jax.device_get(state), expected_state)
  assert_trees_equal(jax.device_get(sums), expected_sums)
  assert int(health.in_a_row) == 0 and int(health.stopped_at) == -1


def resident_call(setup, steps_per_call):
  """A jitted call of the run's resident feed and its split on the devices."""
  feed = train_feed.make_feed(setup)
  assert feed.data is not None, "the digits split fits: it must be resident"
  call = jax.jit(step_calls.scan_steps(guarded_step(setup), steps_per_call, feed.to_batch),
                 in_shardings=(setup.state_shardings, setup.replicated, feed.input_sharding,
                               feed.data_sharding),
                 out_shardings=(setup.state_shardings, setup.replicated, setup.replicated))
  return call, feed


@pytest.mark.parametrize("devices", [1, 8])
def test_resident_calls_of_k_steps_equal_single_resident_steps_bitwise(devices):
  results = []
  for steps_per_call in (1, K):
    setup = make_setup(devices, steps_per_call, group_policy="uniform", group_size_min=2,
                   group_size_max=9, device_resident="on")
    call, feed = resident_call(setup, steps_per_call)
    state, health = fresh(setup)
    for _ in range(0, 2 * K, steps_per_call):
      inputs = feed.take(steps_per_call)
      state, health, _ = call(state, health, inputs, feed.data)
    assert feed.iterator.get_state()["step"] == 2 * K
    results.append(jax.device_get(state))
  assert int(results[1].step) == 2 * K
  assert_trees_equal(results[1], results[0])


def test_one_compile_for_every_group_structure_and_call_length():
  setup = make_setup(1, group_policy="uniform", group_size_min=1, group_size_max=8)
  call = jit_call(setup, K)
  state, health = fresh(setup)
  batches = host_batches(setup, 12)
  for first, length in ((0, K), (4, 1), (5, 3), (8, K)):
    inputs = stacking.stack(batches[first:first + length], K, STEP_KEYS)
    state, health, _ = call(state, health, stacking.to_devices(
        inputs, stacking.input_sharding(setup.mesh, K)), None)
  assert int(state.step) == 12
  assert call._cache_size() == 1


def test_one_compile_for_every_resident_layout_and_call_length():
  setup = make_setup(1, K, group_policy="uniform", group_size_min=1, group_size_max=8,
                 device_resident="on")
  call, feed = resident_call(setup, K)
  state, health = fresh(setup)
  for length in (K, 1, 3, K):
    inputs = feed.take(length)
    state, health, _ = call(state, health, inputs, feed.data)
  assert int(state.step) == 12
  assert call._cache_size() == 1


@pytest.mark.parametrize("family, unroll", [("mlp", 1), ("conv", K)])
def test_on_cpu_only_conv_models_unroll_their_calls(family, unroll):
  config = digits.get_config("smoke")
  config.model.family, config.train.steps_per_call = family, K
  setup = types.SimpleNamespace(config=config)
  assert loop.scan_unroll(setup) == unroll


@pytest.mark.parametrize("step, stops, expected", [
    (0, (), K),  # no stop within reach: a full call
    (0, (2,), 2),  # a log step ends the call there
    (3, (4, 5), 1),
    (5, (5,), K),  # a stop at the current step is behind the call
    (8, (8 + K,), K),  # a stop at the call's last step needs no early end
])
def test_calls_end_at_the_steps_the_host_acts_at(step, stops, expected):
  assert step_calls.call_length(step, K, lambda s: s in stops) == expected


def test_inputs_of_a_call_are_stacked_and_padded_per_key():
  batches = [{"x": np.full((2, 3), i, np.float32), "mask": np.ones(2, bool), "labels": 0}
             for i in (1, 2)]
  stacked = stacking.stack(batches, 3, ("x", "mask"))
  assert set(stacked) == {"x", "mask"}
  np.testing.assert_array_equal(stacked["x"][:, 0, 0], [1, 2, 0])
  np.testing.assert_array_equal(stacked["mask"].any(axis=1), [True, True, False])
  assert stacking.stack(batches[:1], 1, ("x",))["x"] is batches[0]["x"]


def test_inputs_of_k_steps_are_split_along_observations():
  mesh = sharding.make_mesh(digits.get_config("smoke").mesh)
  inputs = stacking.to_devices({"mask": np.ones((K, 16), bool)}, stacking.input_sharding(mesh, K))
  assert inputs["mask"].shape == (K, 16)
  assert {s.data.shape for s in inputs["mask"].addressable_shards} == {(K, 16 // mesh.size)}


# --- The training loop --------------------------------------------------------------------

class NoEvaluation:
  """loop.train's hook with nothing to evaluate."""

  def __call__(self, step, params, *, saving, last):
    return {}

  def due(self, step, *, saving, last):
    return []


def train_run(workdir, resident, steps_per_call, **train_overrides):
  """The digits smoke model for 10 steps, logged at 5 and 10: calls of K=4 are 4, 1, 4, 1."""
  config = digits.get_config("smoke")
  config.data.device_resident = resident
  config.train.update({"num_steps": 10, "log_every": 5, "checkpoint_every": 10,
                       "steps_per_call": steps_per_call, **train_overrides})
  state, _ = loop.train(setup_lib.setup(config), str(workdir), NoEvaluation())
  return jax.device_get(state), logged(workdir)


def logged(workdir):
  return [r for r in metrics_writer.read_metrics(str(workdir)) if "train/loss" in r]


@pytest.fixture(scope="module")
def todays_loop(tmp_path_factory):
  """The host path, one step per call: the loop as it was before calls and resident data."""
  return train_run(tmp_path_factory.mktemp("todays"), "off", 1)


def test_the_host_path_with_k_steps_per_call_equals_todays_loop_bitwise(todays_loop, tmp_path):
  state, records = train_run(tmp_path, "off", K)
  assert_same_run((state, records), todays_loop)


@pytest.fixture(scope="module")
def resident_loop(tmp_path_factory):
  """The resident split, one step per call."""
  return train_run(tmp_path_factory.mktemp("resident"), "on", 1)


def assert_same_run(setup, expected_run):
  (state, records), (expected_state, expected_records) = setup, expected_run
  assert_trees_equal(state, expected_state)
  assert [r["step"] for r in records] == [5, 10]
  for record, expected in zip(records, expected_records):
    keys = sorted(k for k in expected if k.startswith("train/"))
    # Reported terms may round differently where XLA fuses the gather into the step.
    np.testing.assert_allclose([record[k] for k in keys], [expected[k] for k in keys],
                               rtol=METRIC_RTOL, err_msg=str(keys))


def test_resident_runs_equal_under_any_steps_per_call_bitwise(resident_loop, tmp_path):
  assert_same_run(train_run(tmp_path, "on", K), resident_loop)


@pytest.mark.parametrize("resident, before, after", [("on", 1, K), ("on", K, 3), ("off", K, 1)])
def test_a_run_resumes_bit_for_bit_under_another_k(todays_loop, resident_loop, tmp_path,
                                                   resident, before, after):
  train_run(tmp_path, resident, before, num_steps=5)  # saves its last step, 5
  state, _ = train_run(tmp_path, resident, after)
  assert_trees_equal(state, (resident_loop if resident == "on" else todays_loop)[0])


def test_a_host_path_checkpoint_is_not_resumed_on_the_devices(tmp_path):
  train_run(tmp_path, "off", 1, num_steps=5)
  with pytest.raises(data.DataError, match="different data config"):
    train_run(tmp_path, "on", K)


@pytest.mark.parametrize("value", ["auto", 3])
def test_steps_per_call_is_auto_or_a_step_count(value):
  config = digits.get_config("smoke")
  config.train.steps_per_call = value
  expected = (step_calls.auto_steps_per_call("cpu", config.model.family) if value == "auto"
              else value)
  assert setup_lib.setup(config).config.train.steps_per_call == expected
  assert config.train.steps_per_call == value  # the caller's config is left as it was


@pytest.mark.parametrize("value", [0, "fast"])
def test_other_steps_per_call_are_refused(value):
  config = digits.get_config("smoke")
  config.train.steps_per_call = value
  with pytest.raises(SetupError, match=r"train\.steps_per_call=.* use 'auto' or a step count"):
    setup_lib.setup(config)


def test_auto_runs_many_steps_per_call_on_accelerators_and_what_is_fastest_on_cpu():
  table = step_calls.AUTO_STEPS_PER_CALL
  for backend in ("gpu", "tpu"):
    assert step_calls.auto_steps_per_call(backend, "conv") == table["accelerator"]
  assert step_calls.auto_steps_per_call("cpu", "mlp") == table["cpu"]["mlp"] > 1
  assert step_calls.auto_steps_per_call("cpu", "conv") == table["cpu"]["conv"]


def test_a_run_that_cannot_fit_fails_before_writing_anything(tmp_path, monkeypatch):
  monkeypatch.setattr(device_memory, "free_bytes", lambda device, local_devices: 1000)
  with pytest.raises(SetupError, match=r"^this config needs 0\.\d\d GiB per device .* but cpu "
                                       r"device 0 has 0\.00 GiB; lower data\.batch_size"):
    train_run(tmp_path / "run", "auto", K)
  assert not (tmp_path / "run").exists()
  with pytest.raises(SetupError, match=r"device_resident='on' needs 0\.00 GiB per device"):
    train_run(tmp_path / "run", "on", K)
  assert not (tmp_path / "run").exists()
