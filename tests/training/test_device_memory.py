"""Device memory: XLA's account of a compiled call, what a CPU device has free, and the one
line a configuration that cannot fit ends with."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax.training import device_memory
from mlvae_jax.config_helpers import SetupError

ROWS = 1024


def compiled_double(rows: int = ROWS, donate: bool = False) -> jax.stages.Compiled:
  double = jax.jit(lambda a: a * 2, donate_argnums=(0,) if donate else ())
  return double.lower(jax.ShapeDtypeStruct((rows,), jnp.float32)).compile()


@pytest.mark.parametrize("donate, expected", [(False, 2 * 4 * ROWS), (True, 4 * ROWS)])
def test_a_call_needs_its_arguments_outputs_and_temporaries_less_donated_buffers(donate, expected):
  assert device_memory.call_bytes(compiled_double(donate=donate)) == expected


def test_cpu_devices_share_the_available_host_memory():
  device = jax.devices()[0]
  one, eight = (device_memory.free_bytes(device, n) for n in (1, 8))
  assert eight > 0
  np.testing.assert_allclose(8 * eight, one, rtol=0.05)  # free memory moves a little
  assert device_memory.peak_bytes(device) is None  # CPU keeps no allocator account


def test_a_run_that_fits_gets_its_need_back():
  assert device_memory.check_fits(compiled_double(), jax.devices()[0], 1) == 8 * ROWS


def test_a_run_that_cannot_fit_says_how_much_it_needs():
  huge = compiled_double(rows=2**48)  # compiled, never allocated: 2 x 1 PiB
  with pytest.raises(SetupError, match=r"^this config needs 2097152\.00 GiB per device \(state, "
                                       r"inputs and temporaries of a train call, the resident "
                                       r"train split 1\.00\) but cpu device 0 has "):
    device_memory.check_fits(huge, jax.devices()[0], 1, resident_bytes=2**30)
