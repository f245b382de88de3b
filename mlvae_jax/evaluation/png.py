"""A dependency-free PNG encoder, so image grids need neither Pillow nor matplotlib."""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np


def _chunk(kind: bytes, payload: bytes) -> bytes:
  return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """Writes a [H, W] or [H, W, 1|3] image with values in [0, 1] as an 8-bit PNG (creating
  its directory: an evaluation's picture directory exists only once it holds a picture)."""
  pixels = np.clip(np.asarray(image, np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if pixels.ndim == 3 and pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  colour_type = 0 if pixels.ndim == 2 else 2
  height, width = pixels.shape[:2]
  rows = pixels.reshape(height, -1)
  raw = b"".join(b"\x00" + row.tobytes() for row in rows)
  header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(
      b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
      + _chunk(b"IEND", b"")
  )


def tile(images: np.ndarray, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
  """Tiles a [R, C, H, W, ch] array into one image with `pad` pixels between cells."""
  rows, cols, height, width, channels = images.shape
  canvas = np.full(
      (rows * (height + pad) + pad, cols * (width + pad) + pad, channels), pad_value, np.float32
  )
  for r in range(rows):
    for c in range(cols):
      top, left = pad + r * (height + pad), pad + c * (width + pad)
      canvas[top:top + height, left:left + width] = images[r, c]
  return canvas
