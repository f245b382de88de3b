"""python -m mlvae_jax.env: the backend, versions and each dataset's cache state."""

import importlib.metadata
import subprocess
import sys

import jax

from mlvae_jax import env
from mlvae_jax.data import sources


def test_a_cache_with_meta_json_reads_prepared_and_an_empty_data_dir_does_not(tmp_path):
  prepared, cache = env.cache_status("digits", str(tmp_path))
  assert not prepared and cache.is_relative_to(tmp_path)
  cache.mkdir(parents=True)
  (cache / "meta.json").write_text("{}")
  assert env.cache_status("digits", str(tmp_path)) == (True, cache)


def test_the_report_names_backend_versions_and_every_built_in_dataset(tmp_path):
  lines = env.report(str(tmp_path))
  assert lines[0] == f"backend: {jax.default_backend()}"
  assert f"flax: {importlib.metadata.version('flax')}" in lines
  assert f"orbax-checkpoint: {importlib.metadata.version('orbax-checkpoint')}" in lines
  data_lines = [line for line in lines if line.startswith("data ")]
  assert [line.split(":")[0] for line in data_lines] == [f"data {n}" for n in env.BUILT_IN]
  assert all("not prepared" in line for line in data_lines)


def test_the_module_runs_as_a_command(tmp_path):
  out = subprocess.run([sys.executable, "-m", "mlvae_jax.env", str(tmp_path)], check=True,
                       capture_output=True, text=True).stdout
  assert out.splitlines()[0].startswith("backend: ")
  assert str(tmp_path) in out
  assert set(env.BUILT_IN) <= set(sources.DATASETS)
