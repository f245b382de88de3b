"""Where an evaluation's pictures go: a folder per step under eval/, and TensorBoard.

Evaluators draw PNGs into their context's output directory. An evaluation during training
draws into eval/pictures/step_<N>/ (`step_dir`); the final one into eval/ itself, beside
report.md, and `keep_final` copies those into their step's folder too, so eval/pictures/
holds the whole series. `log_pictures` adds a folder's PNGs to TensorBoard at their step,
tagged 'pictures/<file stem>' (one slider per picture), as they are (no re-encoding).
"""

from __future__ import annotations

import pathlib
import shutil
import struct

from tensorboardX import FileWriter
from tensorboardX.proto.summary_pb2 import Summary

PICTURES_DIR = "pictures"


def step_dir(eval_dir: pathlib.Path, step: int) -> pathlib.Path:
  """The folder of the pictures of the evaluation at `step`."""
  return eval_dir / PICTURES_DIR / f"step_{step}"


def log_pictures(directory: pathlib.Path, logdir: pathlib.Path, step: int) -> None:
  """Adds every PNG of `directory` to the TensorBoard events in `logdir` at `step`, tagged
  'pictures/<file stem>'. Each call writes its own events file, named by its step:
  tensorboardX names a file by the second it is opened, so two evaluations in one second
  would otherwise write over one another."""
  paths = sorted(directory.glob("*.png"))
  if not paths:
    return
  writer = FileWriter(str(logdir), filename_suffix=f".pictures.step_{step}")
  for path in paths:
    data = path.read_bytes()
    width, height, _, colour = struct.unpack(">IIBB", data[16:26])
    image = Summary.Image(height=height, width=width, colorspace=3 if colour == 2 else 1,
                          encoded_image_string=data)
    value = Summary.Value(tag=f"pictures/{path.stem}", image=image)
    writer.add_summary(Summary(value=[value]), step)
  writer.close()


def keep_final(eval_dir: pathlib.Path, step: int) -> None:
  """Copies the PNGs of eval/ (the final evaluation's, at `step`) into their step's folder."""
  target = step_dir(eval_dir, step)
  shutil.rmtree(target, ignore_errors=True)
  for path in sorted(eval_dir.glob("*.png")):
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, target / path.name)
