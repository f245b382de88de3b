"""The held-out split protocol: evaluators built without a split read config.evals_split
(validation while choosing), and reports name the split they read."""

import pathlib

import pytest

from mlvae_jax import configs
from mlvae_jax.evaluation.report import headline, write_report


def test_an_evaluator_without_a_split_reads_validation_until_test_is_asked_for():
  config = configs.base_config()
  config.evals.classify = configs.evaluator("classify")
  assert configs.resolved_entry(config, "classify").split == "validation"
  assert configs.resolved_entry(config, "test").split == "validation"
  assert configs.resolved_entry(config, "val").split == "validation"
  config.evals_split = "test"
  assert configs.resolved_entry(config, "classify").split == "test"
  assert configs.resolved_entry(config, "val").split == "validation"  # explicit splits stay
  assert config.evals.classify.split == configs.HELDOUT  # the config itself is not changed


def test_an_explicit_split_is_kept_and_a_bad_evals_split_is_named():
  config = configs.base_config()
  config.evals.unseen = configs.evaluator("accumulation", split="unseen")
  assert configs.resolved_entry(config, "unseen").split == "unseen"
  config.evals_split = "train"
  with pytest.raises(ValueError, match=r"config.evals_split='train' is unknown"):
    configs.resolved_entry(config, "test")


@pytest.mark.parametrize("evals_split, use", [("validation", "for choosing"), ("test", "never to choose")])
def test_report_and_headline_name_the_split(tmp_path: pathlib.Path, evals_split: str, use: str):
  config = configs.base_config()
  config.evals_split = evals_split
  path = tmp_path / "report.md"
  write_report(path, config, {"test/elbo": -100.0, "val/elbo": -99.0}, {}, step=10)
  text = path.read_text()
  assert f"## test: elbo on {evals_split}" in text
  assert "## val: elbo on validation" in text
  assert f"held-out split: {evals_split}" in text and use in text
  assert f"held-out split: {evals_split}" in headline({"test/elbo": -100.0}, None, evals_split)
