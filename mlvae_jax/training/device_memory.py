"""Device memory a run needs, checked before it trains, so a configuration that cannot fit
ends with one line saying how much it needs instead of an allocator failure mid-run.

The need per device is XLA's own account of the compiled train call (its arguments, outputs
and temporaries, less the buffers donated to outputs) plus the training data kept on the
device; what is free is the allocator's headroom on accelerators and, on CPU, the available
host memory shared by the process's devices.
"""

from __future__ import annotations

import os

import jax

from mlvae_jax.config_helpers import SetupError

GIB = 2**30


def free_bytes(device: jax.Device, local_devices: int) -> int:
  """Memory a new array can take on `device`: the allocator's headroom on accelerators; on
  CPU the available host memory, shared by the process's `local_devices`."""
  stats = device.memory_stats()
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // local_devices


def call_bytes(compiled: jax.stages.Compiled) -> int:
  """Bytes one device holds while the compiled call runs, by XLA's memory analysis."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def peak_bytes(device: jax.Device) -> int | None:
  """The allocator's high-water mark on `device` (None on CPU, which keeps no account)."""
  stats = device.memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def check_fits(compiled: jax.stages.Compiled, device: jax.Device, local_devices: int,
               resident_bytes: int = 0) -> int:
  """The bytes one device needs for the compiled train call; a SetupError (one line) when
  `device` lacks them. `resident_bytes`: training data among the call's arguments, already
  placed on the device (so counted as free for this check)."""
  needed = call_bytes(compiled)
  available = free_bytes(device, local_devices) + resident_bytes
  if needed > available:
    resident = f", the resident train split {resident_bytes / GIB:.2f}" if resident_bytes else ""
    raise SetupError(
        f"this config needs {needed / GIB:.2f} GiB per device (state, inputs and temporaries "
        f"of a train call{resident}) but {device.platform} device {device.id} has "
        f"{available / GIB:.2f} GiB; lower data.batch_size or train.steps_per_call, or set "
        "data.device_resident=off"
    )
  return needed
