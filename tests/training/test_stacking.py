"""A call's stacked host inputs in reused, aligned buffers: a buffer an array still holds (on
CPU the array aliases it) is never refilled, one no array holds is, and a short call's padding slots
are zeros again after a full call used the same buffer."""

import gc

import jax
import numpy as np
from jax.sharding import Mesh

from mlvae_jax.training.feed import stacking

KEYS = ("x", "mask")


def batch(value: float, rows: int = 8) -> dict[str, np.ndarray]:
  return {"x": np.full((rows, 3), value, np.float32), "mask": np.ones(rows, bool)}


def to_devices(stacked):
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  return stacking.to_devices(stacked, stacking.input_sharding(mesh, 2))


def test_a_buffer_held_by_an_array_is_not_refilled_until_the_array_is_gone():
  buffers = stacking.SlotBuffers()
  first = stacking.stack([batch(1.0), batch(2.0)], 2, KEYS, buffers)
  first_x = id(first["x"])  # an id: a reference here would hold the buffer itself
  assert first["x"].ctypes.data % 64 == 0  # aligned: on CPU the array aliases it, no copy
  on_devices = to_devices(first)
  del first
  second = stacking.stack([batch(3.0), batch(4.0)], 2, KEYS, buffers)
  assert id(second["x"]) != first_x
  np.testing.assert_array_equal(np.asarray(on_devices["x"])[:, 0, 0], [1.0, 2.0])
  np.testing.assert_array_equal(second["x"][:, 0, 0], [3.0, 4.0])

  del on_devices, second
  gc.collect()
  third = stacking.stack([batch(5.0), batch(6.0)], 2, KEYS, buffers)
  assert id(third["x"]) == first_x  # no array holds it any more: reused, not new memory
  np.testing.assert_array_equal(third["x"][:, 0, 0], [5.0, 6.0])


def test_a_short_call_in_a_reused_buffer_pads_with_zeros_and_no_mask():
  buffers = stacking.SlotBuffers()
  full = stacking.stack([batch(1.0), batch(2.0)], 2, KEYS, buffers)
  full_x = id(full["x"])
  del full
  short = stacking.stack([batch(7.0)], 2, KEYS, buffers)
  assert id(short["x"]) == full_x
  np.testing.assert_array_equal(short["x"][1], np.zeros((8, 3), np.float32))
  assert not short["mask"][1].any() and short["mask"][0].all()


def test_the_pool_keeps_at_most_its_limit_and_still_hands_out_fresh_buffers():
  buffers = stacking.SlotBuffers(keep=2)
  held = [stacking.stack([batch(float(i))], 2, KEYS, buffers)["x"] for i in range(4)]
  assert len({id(x) for x in held}) == 4  # every call got memory no other call holds
  for i, x in enumerate(held):
    assert x[0, 0, 0] == float(i)
