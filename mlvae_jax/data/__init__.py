"""Grouped data for ML-VAE: datasets, splits and fixed-shape ragged-group batches.

    it = make_batch_iterator(config.data, "train", seed=config.seed)
    batch = next(it)               # x, group_ids, mask, labels[, factors]: docs/model.md section 2
    state = it.get_state()         # JSON; it.set_state(state) resumes at the same batch
    test = load_split(config.data, "test")   # whole split as arrays, for evaluation

See mlvae_jax/data/README.md for the datasets, the group policies and the splits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mlvae_jax.data import pipeline, policies, shapes, sources, splits
from mlvae_jax.data.errors import DataError
from mlvae_jax.data.grouping import GroupCoding, group_coding
from mlvae_jax.data.pipeline import BatchIterator

__all__ = ["BatchIterator", "DataError", "Split", "load_split", "make_batch_iterator",
           "observation_shape"]


@dataclasses.dataclass(frozen=True)
class Split:
  """A whole split in memory, for evaluation protocols (probes, metrics, curves)."""

  x: np.ndarray  # float32 [n, ...] in [0, 1]
  labels: np.ndarray  # int32 [n]: group value index, names in group_names
  factors: np.ndarray | None  # int32 [n, F] factor indices, or None
  group_names: tuple[str, ...]  # name of every group value of the dataset
  factor_names: tuple[str, ...] | None


def _examples_and_rows(
    data_config: Any, split: str
) -> tuple[sources.Examples, GroupCoding, np.ndarray]:
  if split not in splits.SPLITS:  # before any preparation work
    raise DataError(f"unknown split {split!r}; choose one of {', '.join(splits.SPLITS)}")
  examples = sources.load_examples(data_config)
  coding = group_coding(examples.fields, data_config.group_by, data_config.name)
  return examples, coding, splits.split_rows(examples, coding, data_config, split)


def load_split(data_config: Any, split: str) -> Split:
  """Every example of `split` (in dataset order), with labels and factors; grouped_shapes'
  rotation is its phase within the shape's symmetry period (`shapes.identifiable_factors`)."""
  examples, coding, rows = _examples_and_rows(data_config, split)
  x = examples.images[rows].astype(np.float32) / np.float32(examples.pixel_scale)
  factors = examples.factors(rows)
  if data_config.name == "grouped_shapes":
    factors = shapes.identifiable_factors(factors)
  return Split(x=x, labels=coding.codes[rows], factors=factors,
               group_names=coding.names, factor_names=examples.factor_names)


def observation_shape(data_config: Any) -> tuple[int, ...]:
  """[H, W, C] of one observation; datasets other than the built-in ones are prepared."""
  if data_config.name in sources.RENDERERS:
    sources.check_shapes_config(data_config)
    channels = 3 if data_config.name == "grouped_scenes" else 1
    return (data_config.resolution, data_config.resolution, channels)
  static = {"digits": (8, 8, 1), "mnist": (28, 28, 1)}
  if data_config.name in static:
    return static[data_config.name]
  return tuple(sources.load_examples(data_config).images.shape[1:])


def make_batch_iterator(
    data_config: Any,
    split: str,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
) -> BatchIterator:
  """Batches of `split` for this process: a deterministic function of (seed, step).

  Every process reads its own shard of the split (examples i with i % process_count ==
  process_index) and forms whole groups from it; its batch has N/process_count rows and
  group slots [p G/P, (p + 1) G/P) with global ids. `num_epochs=None` repeats forever and
  drops each epoch's last partial batch; a finite count keeps it (padded), so evaluation
  covers every example.
  """
  if num_epochs is not None and num_epochs < 1:
    raise DataError(f"num_epochs={num_epochs} must be >= 1 or None (forever)")
  batcher = make_batcher(data_config, split, seed=seed, process_index=process_index,
                         process_count=process_count, finite=num_epochs is not None)
  return BatchIterator(
      batcher, num_epochs=num_epochs, num_workers=int(data_config.num_workers),
      fingerprint=pipeline.fingerprint(data_config, split, int(seed), num_epochs))


def make_batcher(data_config: Any, split: str, *, seed: int, process_index: int = 0,
                 process_count: int = 1, finite: bool = False) -> pipeline.Batcher:
  """The step -> batch function behind `make_batch_iterator` (same arguments, checks)."""
  n, g = int(data_config.batch_size), int(data_config.num_groups)
  if n < 1 or g < 1:
    raise DataError(f"data.batch_size (N={n}) and data.num_groups (G={g}) must be >= 1")
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index {process_index} is outside [0, {process_count})")
  if n % process_count or g % process_count:
    raise DataError(
        f"N={n} and G={g} must both be divisible by the number of processes "
        f"({process_count}): each process gets N/P rows and G/P group slots"
    )
  policy = policies.policy_from_config(data_config)
  examples, coding, rows = _examples_and_rows(data_config, split)
  shards = [rows[p::process_count] for p in range(process_count)]
  for p, shard in enumerate(shards):
    where = f"split {split!r}" + (f", process {p} of {process_count}" if process_count > 1 else "")
    policies.check_capacity(policy, coding.codes[shard], n // process_count,
                            g // process_count, where)
  return pipeline.Batcher(
      images=examples.images, pixel_scale=examples.pixel_scale, shards=shards,
      codes=coding.codes, factors=examples.factors(np.arange(len(coding.codes))),
      policy=policy, split=split, seed=int(seed), batch_size=n, num_groups=g,
      process_index=process_index, finite=finite)
