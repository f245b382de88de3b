"""A small PNG decoder for tests: reads back what evaluation/png.py (or any writer) wrote.

Handles 8-bit greyscale, grey+alpha, RGB and RGBA, non-interlaced, with every scanline
filter, and checks the signature and each chunk's CRC, so a test that compares decoded
pixels checks the file a person opens, not the array it came from.
"""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel


class PNGError(ValueError):
  """The bytes are not a PNG this decoder reads."""


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
  if not data.startswith(SIGNATURE):
    raise PNGError(f"not a PNG: starts with {data[:8]!r}")
  chunks, offset = [], len(SIGNATURE)
  while offset < len(data):
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    kind = data[offset + 4:offset + 8]
    payload = data[offset + 8:offset + 8 + length]
    (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
    if len(payload) != length or zlib.crc32(kind + payload) != crc:
      raise PNGError(f"chunk {kind!r} at byte {offset} is truncated or fails its CRC")
    chunks.append((kind, payload))
    offset += 12 + length
  if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
    raise PNGError("a PNG starts with IHDR and ends with IEND")
  return chunks


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
  p = a + b - c
  pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
  return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw: bytes, height: int, row_bytes: int, bpp: int) -> np.ndarray:
  """Undoes the per-scanline filters (PNG spec section 9)."""
  rows = np.frombuffer(raw, np.uint8)
  if rows.size != height * (row_bytes + 1):
    raise PNGError(f"image data holds {rows.size} bytes, expected {height * (row_bytes + 1)}")
  rows = rows.reshape(height, row_bytes + 1)
  out = np.zeros((height, row_bytes), np.int64)
  previous = np.zeros(row_bytes, np.int64)
  for y in range(height):
    kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
    if kind in (0, 2):
      row = line + (previous if kind == 2 else 0)
    elif kind in (1, 3, 4):  # left neighbours: one pixel at a time
      row = np.zeros(row_bytes, np.int64)
      for x in range(0, row_bytes, bpp):
        left = row[x - bpp:x] if x else np.zeros(bpp, np.int64)
        up = previous[x:x + bpp]
        up_left = previous[x - bpp:x] if x else np.zeros(bpp, np.int64)
        predictor = {1: left, 3: (left + up) // 2, 4: _paeth(left, up, up_left)}[int(kind)]
        row[x:x + bpp] = (line[x:x + bpp] + predictor) % 256
    else:
      raise PNGError(f"scanline {y} has unknown filter type {kind}")
    out[y] = previous = row % 256
  return out.astype(np.uint8)


def decode_png(source: pathlib.Path | bytes) -> np.ndarray:
  """uint8 pixels: [H, W] for greyscale, [H, W, channels] otherwise."""
  data = pathlib.Path(source).read_bytes() if isinstance(source, (str, pathlib.Path)) else source
  chunks = _chunks(data)
  width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
  if depth != 8 or colour not in _CHANNELS or interlace:
    raise PNGError(f"unsupported PNG: bit depth {depth}, colour type {colour}, interlace {interlace}")
  channels = _CHANNELS[colour]
  raw = zlib.decompress(b"".join(payload for kind, payload in chunks if kind == b"IDAT"))
  pixels = _unfilter(raw, height, width * channels, channels).reshape(height, width, channels)
  return pixels[..., 0] if channels == 1 else pixels
