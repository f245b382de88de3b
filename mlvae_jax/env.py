"""`python -m mlvae_jax.env [DATA_DIR]`: what this machine will train on, in a few lines.

Prints the JAX backend and devices (to see that the accelerator jaxlib of the [cuda] or [tpu]
extra is the one in use), the jax / jaxlib / flax / orbax versions, and for each built-in
dataset whether its prepared numpy cache exists under DATA_DIR (default: data.data_dir's).
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import sys

import jax

from mlvae_jax import configs
from mlvae_jax.data import sources

BUILT_IN = ("digits", "mnist", "grouped_shapes", "grouped_scenes")
PACKAGES = ("jax", "jaxlib", "flax", "orbax-checkpoint")


def cache_status(name: str, data_dir: str = "") -> tuple[bool, pathlib.Path]:
  """(prepared, cache directory) of dataset `name` with the default data settings."""
  data_config = configs.base_config().data
  data_config.name = name
  data_config.data_dir = data_dir
  cache = sources.cache_dir(data_config)
  return (cache / "meta.json").is_file(), cache


def report(data_dir: str = "") -> list[str]:
  """The lines `python -m mlvae_jax.env` prints."""
  lines = [f"backend: {jax.default_backend()}",
           f"devices: {jax.device_count()} ({', '.join(sorted({d.device_kind for d in jax.devices()}))}), "
           f"processes: {jax.process_count()}"]
  lines += [f"{p}: {importlib.metadata.version(p)}" for p in PACKAGES]
  for name in BUILT_IN:
    prepared, cache = cache_status(name, data_dir)
    lines.append(f"data {name}: {'prepared' if prepared else 'not prepared (the first run prepares it)'} ({cache})")
  return lines


def main(argv: list[str]) -> None:
  if len(argv) > 2:
    sys.exit("usage: python -m mlvae_jax.env [DATA_DIR]")
  print("\n".join(report(argv[1] if len(argv) == 2 else "")))


if __name__ == "__main__":
  main(sys.argv)
