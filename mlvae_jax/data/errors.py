"""The one exception type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
  """Bad data input: the message says what is wrong, where, and how to fix it."""
