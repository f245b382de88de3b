"""What a benchmark ran on, stored with its figures so results from two machines compare."""

from __future__ import annotations

import platform
from typing import Any

import jax
import psutil


def describe() -> dict[str, Any]:
  """Processor, cores, memory, Python, JAX and the devices JAX sees."""
  return {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "physical_cores": psutil.cpu_count(logical=False),
      "logical_cores": psutil.cpu_count(logical=True),
      "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
      "python": platform.python_version(),
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": [str(d.device_kind) for d in jax.devices()],
  }
