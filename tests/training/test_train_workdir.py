"""What a run decides before writing: resume plans, config differences, writability and the
one-line explanation of a bad command line."""

import pytest

from experiments import digits
from mlvae_jax import config_helpers, configs
from mlvae_jax.training import workdir
from mlvae_jax.training.workdir import SetupError


def _config(**train):
  config = digits.get_config("smoke")
  config.train.update(train)
  return config


def test_fresh_workdir_starts_from_scratch():
  assert workdir.plan_resume(_config(), "w", [], None) == workdir.ResumePlan(None)


def test_auto_resumes_the_latest_checkpoint_of_the_same_run():
  saved = _config().to_dict()
  longer = _config(num_steps=100, log_every=7)  # logging and length may change on resume
  assert workdir.plan_resume(longer, "w", [2, 4], saved).resume_step == 4


def test_auto_refuses_another_configs_checkpoints_naming_the_differences():
  saved = _config().to_dict()
  other = _config()
  other.optim.learning_rate = 0.5
  with pytest.raises(SetupError, match=r"of another config \(optim.learning_rate: 0.001 -> 0.5\)"):
    workdir.plan_resume(other, "w", [4], saved)


def test_restart_discards_and_never_refuses():
  saved = _config().to_dict()
  assert workdir.plan_resume(_config(resume="restart"), "w", [2, 4], saved) == workdir.ResumePlan(
      None, (2, 4))
  with pytest.raises(SetupError, match="resume='never'"):
    workdir.plan_resume(_config(resume="never"), "w", [4], saved)


def test_writability_is_checked_without_creating_anything(tmp_path):
  workdir.check_writable(str(tmp_path / "a" / "b"))
  assert list(tmp_path.iterdir()) == []
  (tmp_path / "f").write_text("")
  with pytest.raises(SetupError, match="not a directory"):
    workdir.check_writable(str(tmp_path / "f" / "run"))


@pytest.mark.parametrize("key, expected", [
    ("model.hiden", "did you mean 'model.hidden'?"),
    ("modle.hidden", "did you mean 'model.hidden'?"),
    ("zzz", "valid keys start with one of: data, evals, evals_split, mesh, model, objective, optim, seed, train"),
])
def test_unknown_keys_suggest_the_nearest_valid_key(key, expected):
  assert config_helpers.unknown_key_message(digits.get_config(), key).endswith(expected)


def test_flag_errors_name_the_bad_override():
  argv = ["--config=experiments/digits.py:smoke", "--config.seed=x"]
  message = config_helpers.describe_flag_error(argv, ValueError("flag --config.seed=x: invalid literal"))
  assert message == "--config.seed=x: config.seed must be of type int, got 'x'"


def test_a_saved_config_from_before_a_key_existed_gets_that_keys_default():
  saved = digits.get_config("paper,smoke").to_dict()  # paper: single_member_rate at its default
  del saved["optim"]["weight_decay"], saved["objective"]["single_member_rate"]
  saved["model"]["hidden"] = 7  # the run's own values stay
  del saved["evals"]["val"]  # and so do its evaluators: no default one is added back
  saved["evals"]["swap"] = configs.evaluator("swap", num_pairs=10).to_dict()
  del saved["evals"]["swap"]["judge"]  # but a setting its type gained since gets its default
  filled = configs.fill_later_defaults(saved)
  assert filled["optim"]["weight_decay"] == 0.0 and filled["objective"]["single_member_rate"] == 0.0
  assert filled["model"]["hidden"] == 7 and "val" not in filled["evals"]
  assert filled["evals"]["swap"] == configs.evaluator("swap", num_pairs=10).to_dict()
  assert "weight_decay" not in saved["optim"] and "judge" not in saved["evals"]["swap"]  # input kept
  assert workdir.config_differences(digits.get_config("paper,smoke").to_dict(), filled) == [
      "model.hidden: 7 -> 32"]
