"""Reading IDX files (the MNIST format), raw or gzip-compressed, with integrity checks.

Every failure is a DataError naming the file, because a truncated download or a renamed
file otherwise surfaces much later as a shape error deep inside a builder.
"""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import zlib

import numpy as np

from mlvae_jax.data.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_bytes(path: pathlib.Path) -> bytes:
  """The uncompressed content of `path` ('.gz' files are decompressed)."""
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        return f.read()
    return path.read_bytes()
  except (OSError, EOFError, zlib.error) as e:  # zlib.error: a corrupted deflate stream
    raise DataError(f"cannot read {path}: {e}; replace it with a fresh copy") from e


def parse_idx(content: bytes, *, source: str, expected_shape: tuple[int, ...]) -> np.ndarray:
  """Decodes an IDX payload and checks magic number, rank, dims and byte count."""
  if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _DTYPES:
    raise DataError(
        f"{source} is not an IDX file: wrong magic number {content[:4].hex() or '(empty)'} "
        "(expected 0000 08 0N); check that the file is an MNIST IDX file and not an HTML page "
        "or a file of another format"
    )
  dtype, ndim = np.dtype(_DTYPES[content[2]]), content[3]
  if ndim != len(expected_shape):
    raise DataError(
        f"{source} has magic number {content[:4].hex()} ({ndim} dimensions) but "
        f"{len(expected_shape)} dimensions {expected_shape} were expected; is it the right file?"
    )
  header = 4 + 4 * ndim
  dims = tuple(int(d) for d in np.frombuffer(content[4:header], dtype=">u4"))
  if dims != expected_shape:
    raise DataError(f"{source} holds an array of shape {dims}, expected {expected_shape}")
  expected_bytes = header + int(np.prod(dims)) * dtype.itemsize
  if len(content) != expected_bytes:
    raise DataError(
        f"{source} has {len(content)} bytes, expected {expected_bytes} for shape {dims}: the "
        "file is truncated or corrupted; download it again"
    )
  return np.frombuffer(content, dtype=dtype, offset=header).reshape(dims)


def read_idx(
    path: pathlib.Path, *, expected_shape: tuple[int, ...], sha256: str | None = None
) -> np.ndarray:
  """Reads and checks an IDX file; `sha256` is of the uncompressed bytes (gz or raw alike)."""
  content = read_bytes(path)
  array = parse_idx(content, source=str(path), expected_shape=expected_shape)
  if sha256 is not None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
      raise DataError(
          f"checksum mismatch for {path}: sha256 of the uncompressed bytes is {digest}, "
          f"expected {sha256}; the file is corrupted or not the original, download it again"
      )
  return array
