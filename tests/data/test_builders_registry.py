"""Our builders as TFDS users meet them: registered by name, built by `tfds build`'s code,
TensorFlow-free, and quiet on a first offline preparation."""

import json
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

from mlvae_jax.data import DataError, builders
from tests.data.test_data_builders import MNIST_DIR, needs_mnist

REPO = pathlib.Path(__file__).resolve().parents[2]
# Runs in a fresh interpreter, so the imports seen are the package's own.
_REGISTRY_SCRIPT = """
import json, sys
import tensorflow_datasets as tfds
tfds_own = set(tfds.list_builders(with_community_datasets=False))
from mlvae_jax.data import builders
root = sys.argv[1]
ours = {cls.name: cls for cls in (builders.Digits, builders.Mnist, builders.GroupedShapes,
                                  builders.Lfw)}
tfds.builder("mlvae_digits", data_dir=root).download_and_prepare()
source = tfds.data_source("mlvae_digits", data_dir=root)
print(json.dumps({
    "clashes": sorted(set(ours) & tfds_own),
    "resolved": {name: tfds.builder_cls(name) is cls for name, cls in ours.items()},
    "sizes": {split: len(records) for split, records in source.items()},
    "first_test": [list(source["test"][0]["image"].shape), int(source["test"][0]["label"])],
    "file_format": tfds.builder("mlvae_digits", data_dir=root).info.file_format.value,
    "shapes_config": tfds.builder("mlvae_grouped_shapes", data_dir=root).builder_config.name,
    "tensorflow": "tensorflow" in sys.modules,
}))
"""


def _python(*args, cwd=REPO):
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        timeout=300)


def test_builders_are_registered_and_read_without_tensorflow(tmp_path):
  run = _python("-c", _REGISTRY_SCRIPT, str(tmp_path))
  assert run.returncode == 0, run.stderr
  found = json.loads(run.stdout.strip().splitlines()[-1])
  assert found["clashes"] == []  # TFDS has an `mnist` and an `lfw`; ours are mlvae_*
  assert found["resolved"] == dict.fromkeys(
      ["mlvae_digits", "mlvae_mnist", "mlvae_grouped_shapes", "mlvae_lfw"], True)
  assert found["sizes"] == {"test": 360, "train": 1437}
  assert found["first_test"] == [[8, 8, 1], 0]  # scikit-learn's first digit is a 0
  assert found["file_format"] == "array_record"
  assert found["shapes_config"] == "r32_n20000_s0"
  assert not found["tensorflow"]


def test_tfds_build_command_without_tensorflow(tmp_path):
  """`python -m mlvae_jax.data.builders` is TFDS's own `build` subcommand (from any directory)."""
  run = _python("-m", "mlvae_jax.data.builders", "mlvae_digits", f"--data_dir={tmp_path}",
                cwd=tmp_path)
  assert run.returncode == 0, run.stderr
  prepared = tmp_path / "mlvae_digits" / "1.0.0"
  assert (prepared / "dataset_info.json").is_file()
  assert sorted(p.name for p in prepared.glob("*.array_record-*")) == [
      "mlvae_digits-test.array_record-00000-of-00001",
      "mlvae_digits-train.array_record-00000-of-00001"]
  assert tfds.builder("mlvae_digits", data_dir=str(tmp_path)).is_prepared()


def test_mnist_takes_the_manual_directory_tfds_build_passes(tmp_path):
  """`tfds build --manual_dir=DIR` reaches the builder as a DownloadConfig, not a kwarg."""
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "t10k-labels-idx1-ubyte").write_bytes(b"\0")
  builder = tfds.builder("mlvae_mnist", data_dir=str(tmp_path / "data"))
  assert isinstance(builder, builders.Mnist)
  config = tfds.download.DownloadConfig(manual_dir=str(manual))
  with pytest.raises(DataError, match=f"train-images-idx3-ubyte.gz .*is missing from {manual}"):
    builder.download_and_prepare(download_config=config)  # read from there, not downloaded


@needs_mnist
def test_first_mnist_preparation_says_one_line_per_stage(tmp_path):
  script = """
import sys
from mlvae_jax import configs
from mlvae_jax.data import sources
config = configs.base_config().data
config.update(name="mnist", data_dir=sys.argv[1], manual_dir=sys.argv[2])
sources.prepare(config)
print("SECOND RUN", file=sys.stderr, flush=True)
sources.prepare(config)
"""
  run = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(MNIST_DIR)], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
  assert run.returncode == 0, run.stdout
  first, second = run.stdout.split("SECOND RUN")
  lines = [line for line in first.splitlines() if line.strip()]
  print("\n".join(lines))  # the lines a user sees, shown with pytest -s
  for chatter in ("Downloading and preparing", "Subsequent calls", "dataset_info.json",
                  "Generating splits", "WARNING"):
    assert chatter not in first
  assert len(lines) == 2, lines
  assert re.fullmatch(r"data: prepared mlvae_mnist \(train 60000, test 10000\) in "
                      rf"{tmp_path}/mlvae_mnist/1\.0\.0 \(\d+\.\d s\)", lines[0])
  assert re.fullmatch(rf"data: decoded mlvae_mnist into a numpy cache in {tmp_path}/mlvae_numpy/"
                      r"mlvae_mnist/1\.0\.0/image \(\d+\.\d s\)", lines[1])
  assert not second.strip()  # prepared: nothing to say

