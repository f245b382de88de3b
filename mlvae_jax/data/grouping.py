"""Group values: which label field(s) define a group, and an integer code for each value.

A group value is the tuple of the `group_by` fields of an example (a digit class, an
identity, a (shape, scale) pair). Codes index the sorted distinct values of the whole
dataset, so every split of a dataset agrees on them. A value is written with its field values
joined by ':' (e.g. '2:5' for shape 2, scale 5), the spelling `data.unseen_groups` uses.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from mlvae_jax.data.errors import DataError


@dataclasses.dataclass(frozen=True)
class GroupCoding:
  fields: tuple[str, ...]  # the group_by fields, in order
  values: np.ndarray  # [K, F] distinct value tuples, sorted
  codes: np.ndarray  # [n] int32: each example's row in `values`

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(":".join(_format(v) for v in row) for row in self.values)

  def lookup(self, text: str) -> np.ndarray:
    """Codes of the comma-separated group values in `text` ('' gives none)."""
    wanted = [item.strip() for item in text.split(",") if item.strip()]
    index = {name: code for code, name in enumerate(self.names)}
    unknown = [item for item in wanted if item not in index]
    if unknown:
      examples = ", ".join(self.names[:6])
      raise DataError(
          f"data.unseen_groups names group values {unknown} that do not occur for group_by="
          f"{','.join(self.fields)!r}; write values as field values joined by ':' in "
          f"group_by order, e.g. {examples}"
      )
    return np.asarray(sorted({index[item] for item in wanted}), np.int32)


def _format(value: np.generic) -> str:
  if isinstance(value, str):  # text labels, e.g. a person's name
    return value
  if isinstance(value, (float, np.floating)):
    return f"{float(value):g}"
  return str(int(value))


def parse_group_by(group_by: str) -> tuple[str, ...]:
  fields = tuple(f.strip() for f in group_by.split(",") if f.strip())
  if not fields:
    raise DataError("data.group_by is empty; name the label field(s) that define a group")
  return fields


def group_coding(fields: Mapping[str, np.ndarray], group_by: str, dataset: str) -> GroupCoding:
  """Codes the `group_by` value of every example; a missing field is a DataError."""
  names = parse_group_by(group_by)
  missing = [name for name in names if name not in fields]
  if missing:
    raise DataError(
        f"dataset {dataset!r} has no label field {missing} for data.group_by={group_by!r}; "
        f"available fields: {', '.join(sorted(fields))}"
    )
  columns = np.stack([np.asarray(fields[name]) for name in names], axis=1)
  values, codes = np.unique(columns, axis=0, return_inverse=True)
  return GroupCoding(names, values, codes.reshape(-1).astype(np.int32))
