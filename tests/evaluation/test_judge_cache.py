"""The swap judge is fitted once per dataset and settings and cached beside the prepared data:
a second evaluation loads it, a changed setting refits under another key, a damaged file is
refitted and replaced, a failed write leaves nothing behind, and a data dir that cannot be
written is left alone."""

import pathlib
import shutil

import jax
import ml_collections
import pytest

from mlvae_jax import config_helpers, configs, evaluation
from mlvae_jax.evaluation import judge_cache
from mlvae_jax.training import setup as setup_lib


def _config(data_dir, **overrides):
  config = configs.base_config()
  config.data.data_dir = str(data_dir)
  config.data.batch_size, config.data.num_groups = 64, 8
  config.model.update(hidden=16, content_dim=3, style_dim=2)
  config.evals = ml_collections.ConfigDict({"swap": configs.evaluator(
      "swap", fit_examples=300, max_examples=200, num_pairs=50, classifier_hidden=16,
      classifier_epochs=1)})
  for key, value in overrides.items():
    config_helpers.set_path(config, key, value)
  return config


def _evaluate(config, workdir):
  """The swap metrics of the model's initial parameters."""
  setup = setup_lib.setup(config)
  return evaluation.Evaluators(config, setup, workdir).run(jax.device_get(setup.init().params))


def _judges(data_dir):
  """{file name: bytes} of the judges cached in `data_dir`."""
  cache = pathlib.Path(data_dir) / judge_cache.CACHE_DIR
  return {p.name: p.read_bytes() for p in cache.glob("*" + judge_cache.SUFFIX)}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  """A data dir with digits prepared and no judges."""
  data_dir = tmp_path_factory.mktemp("prepared")
  _evaluate(_config(data_dir), tmp_path_factory.mktemp("work"))
  shutil.rmtree(data_dir / judge_cache.CACHE_DIR)
  return data_dir


@pytest.fixture
def data_dir(prepared, tmp_path):
  """A copy of `prepared` of the test's own, so every test starts with no judges."""
  return shutil.copytree(prepared, tmp_path / "data")


@pytest.fixture
def fits(monkeypatch):
  """Counts the judges fitted (not loaded from the cache) from now on."""
  fitted = []
  fit = judge_cache.fit_pixel_classifier

  def counting(*args, **kwargs):
    fitted.append(kwargs)
    return fit(*args, **kwargs)

  monkeypatch.setattr(judge_cache, "fit_pixel_classifier", counting)
  return fitted


def test_a_second_evaluation_loads_the_judge_and_scores_the_same(data_dir, tmp_path, fits, capsys):
  config = _config(data_dir)
  first = _evaluate(config, tmp_path / "a")
  assert len(fits) == 1
  cached = _judges(data_dir)
  assert len(cached) == 1
  assert "0 judge(s) loaded and 1 fitted" in capsys.readouterr().err
  second = _evaluate(config, tmp_path / "b")
  assert len(fits) == 1  # nothing refitted
  assert "1 judge(s) loaded and 0 fitted" in capsys.readouterr().err
  assert second == first  # the loaded judge is the fitted one: every score the same
  assert _judges(data_dir) == cached  # read, not rewritten
  (name,) = cached
  assert first["swap/judge_key"] == judge_cache.short_key(
      {"group": name.removesuffix(judge_cache.SUFFIX)})
  assert sorted(p.suffix for p in (data_dir / judge_cache.CACHE_DIR).iterdir()) == [
      ".judge", ".lock"]  # no temporary file left


@pytest.mark.parametrize("base, change", [
    ({}, {"evals.swap.classifier_hidden": 24}),
    ({}, {"evals.swap.classifier_epochs": 2}),
    ({}, {"evals.swap.fit_examples": 400}),
    ({}, {"evals.swap.fit_split": "validation"}),
    ({}, {"seed": 1}),
    ({}, {"evals.swap.judge": "encoder"}),
    ({"evals.swap.judge": "encoder"}, {"model.hidden": 24}),
    ({"evals.swap.judge": "encoder"}, {"model.activation": "relu"}),
], ids=lambda overrides: ",".join(overrides) or "-")
def test_a_changed_setting_refits_under_another_key(data_dir, tmp_path, fits, base, change):
  before = _evaluate(_config(data_dir, **base), tmp_path / "a")
  after = _evaluate(_config(data_dir, **base, **change), tmp_path / "b")
  assert len(fits) == 2 and len(_judges(data_dir)) == 2
  assert after["swap/judge_key"] != before["swap/judge_key"]


def test_settings_the_judge_does_not_read_reuse_it(data_dir, tmp_path, fits):
  before = _evaluate(_config(data_dir), tmp_path / "a")
  after = _evaluate(_config(data_dir, **{"evals.swap.num_pairs": 80, "model.hidden": 24}),
                    tmp_path / "b")
  assert len(fits) == 1 and after["swap/judge_key"] == before["swap/judge_key"]


def _flip(data):
  return data[:-7] + bytes([data[-7] ^ 1]) + data[-6:]


@pytest.mark.parametrize("damage, reason", [
    (_flip, "its checksum does not match"),
    (lambda data: data[:len(data) // 2], "its checksum does not match"),
    (lambda data: b"", "its checksum does not match"),
    ("another key", "it holds another key"),
])
def test_a_damaged_cache_file_is_refitted_and_replaced(data_dir, tmp_path, fits, capsys,
                                                       damage, reason):
  config = _config(data_dir)
  first = _evaluate(config, tmp_path / "a")
  (name, data), = _judges(data_dir).items()
  path = data_dir / judge_cache.CACHE_DIR / name
  if damage == "another key":  # a whole file, of another judge, under this judge's name
    _evaluate(_config(data_dir, seed=1), tmp_path / "other")
    (other,) = set(_judges(data_dir)) - {name}
    shutil.copy(path.parent / other, path)
  else:
    path.write_bytes(damage(data))
  capsys.readouterr()
  assert _evaluate(config, tmp_path / "b") == first
  assert f"swap judge cache: {path} is damaged ({reason}" in capsys.readouterr().err
  fitted = len(fits)
  assert _evaluate(config, tmp_path / "c") == first  # the replaced file is whole again
  assert len(fits) == fitted


def test_a_failed_write_leaves_no_file_and_fits_in_memory(data_dir, tmp_path, fits, capsys,
                                                          monkeypatch):
  def full_disk(source, target):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(judge_cache.os, "replace", full_disk)
  metrics = _evaluate(_config(data_dir), tmp_path / "a")
  assert "swap/judge_key" in metrics and len(fits) == 1
  assert [p.suffix for p in (data_dir / judge_cache.CACHE_DIR).iterdir()] == [".lock"]
  err = capsys.readouterr().err
  assert err.count("cannot write") == 1 and "No space left on device" in err


def test_a_read_only_data_dir_is_read_but_never_written(data_dir, tmp_path, fits, capsys,
                                                        monkeypatch):
  config = _config(data_dir)
  first = _evaluate(config, tmp_path / "a")
  cached = _judges(data_dir)
  monkeypatch.setattr(judge_cache, "_writable", lambda directory: False)
  assert _evaluate(config, tmp_path / "b") == first and len(fits) == 1  # loaded
  changed = _config(data_dir, **{"evals.swap.classifier_hidden": 24})
  _evaluate(changed, tmp_path / "c")
  assert len(fits) == 2 and _judges(data_dir) == cached  # fitted in memory only
  err = capsys.readouterr().err
  assert err.count("judges are fitted in memory and not cached") == 1
