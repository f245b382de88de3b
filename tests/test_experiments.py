"""Experiment files: presets as flat overrides, named in the arg string."""

import pathlib

import pytest

from experiments import common, mnist, shapes
from mlvae_jax.config_helpers import load_module


ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(path.stem for path in (ROOT / "experiments").glob("*.py")
                     if "PRESETS" in path.read_text())


def test_the_experiment_files_are_found():
  assert {"digits", "faces", "mnist", "shapes"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_preset_builds_and_sets_no_key_of_the_base(name):
  module = load_module(str(ROOT / "experiments" / f"{name}.py"))
  for preset, overrides in module.PRESETS.items():
    assert not set(overrides) & set(module.BASE), preset
    config = module.get_config(preset)
    for key, value in overrides.items():
      section, leaf = key.split(".")
      assert config[section][leaf] == value, (preset, key)


def test_a_bare_preset_name_picks_it_and_the_first_preset_is_the_default():
  assert mnist.get_config("paper").to_dict() == mnist.get_config("preset=paper").to_dict()
  assert mnist.get_config().to_dict() == mnist.get_config(f"preset={next(iter(mnist.PRESETS))}").to_dict()
  assert mnist.get_config("paper").model.style_dim == 10
  assert shapes.get_config("paper").train.num_steps == 20000


@pytest.mark.parametrize("arg, pattern", [
    ("paper,groups_of_8", r"names the presets \['paper', 'groups_of_8'\]; pick one of default"),
    ("preset=shipped", r"names the presets \['shipped'\]; pick one of default, paper"),
    ("previous", r"unknown experiment arg 'previous'; valid: .*or a preset: default, paper, groups_of_8"),
])
def test_bad_preset_args_are_named(arg, pattern):
  with pytest.raises(ValueError, match=pattern):
    mnist.get_config(arg)


def test_a_preset_key_set_twice_or_unknown_is_named():
  with pytest.raises(ValueError, match=r"the preset sets \['model.hidden'\], which the experiment's BASE"):
    common.build_config({"model.hidden": 1}, {"model.hidden": 2})
  with pytest.raises(ValueError, match="preset key 'model.hiden' is not a config key"):
    common.build_config({}, {"model.hiden": 2})
