"""Reads back what a run wrote to TensorBoard: the image summaries of every events file."""

from __future__ import annotations

import pathlib
import struct

from tensorboardX.proto import event_pb2


def events(logdir: pathlib.Path) -> list[event_pb2.Event]:
  """Every event of every events file in `logdir` (TFRecord: length, its crc, record, crc)."""
  found = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      found.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]))
      pos += 16 + length
  return found


def images(logdir: pathlib.Path) -> dict[tuple[str, int], bytes]:
  """{(tag, step): PNG bytes} of every image summary in `logdir`; a (tag, step) written twice
  fails, so a test sees duplicates."""
  found: dict[tuple[str, int], bytes] = {}
  for event in events(logdir):
    for value in event.summary.value:
      if value.HasField("image"):
        key = (value.tag, event.step)
        assert key not in found, f"{key} is in the events twice"
        found[key] = value.image.encoded_image_string
  return found
