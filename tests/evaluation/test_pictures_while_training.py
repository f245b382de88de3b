"""Pictures while training: every evaluation that runs a picture evaluator (at its `every`)
puts its pictures in TensorBoard at that step and in eval/pictures/step_<N>/; the final
evaluation's stay in eval/ as well."""

import jax

from mlvae_jax import configs, evaluation, train
from mlvae_jax.training import setup as setup_lib
from tests.evaluation import tensorboard_events
from tests.evaluation.png_decode import decode_png
from tests.training.test_train import params_at, smoke_config

FIGURES = ("interpolation", "prior", "traversals")
IMAGES = ("reconstructions", "swap")


def _config():
  config = smoke_config()  # 4 steps, checkpoints at 2 and 4
  config.evals.figures = configs.evaluator(
      "figures", every=2, grid=2, traversal_steps=3, interpolation_steps=3,
      interpolation_rows=2, pool_size=2, min_pixels=8)
  config.evals.images = configs.evaluator("images", grid=2, min_pixels=8)  # every=0: the end
  return config


def test_figures_every_two_steps_reach_tensorboard_and_eval_at_steps_two_and_four(tmp_path):
  config = _config()
  train.train_and_evaluate(config, str(tmp_path))
  eval_dir = tmp_path / "eval"
  logged = tensorboard_events.images(tmp_path / "tensorboard")
  expected = {(f"pictures/{name}", 2) for name in FIGURES}
  expected |= {(f"pictures/{name}", 4) for name in FIGURES + IMAGES}
  assert set(logged) == expected
  for (tag, step), png in logged.items():
    name = tag.removeprefix("pictures/")
    assert png == (eval_dir / "pictures" / f"step_{step}" / f"{name}.png").read_bytes()
    decode_png(png)  # a whole, valid PNG
  assert sorted(p.name for p in (eval_dir / "pictures").iterdir()) == ["step_2", "step_4"]
  assert all(logged[(f"pictures/{name}", 2)] != logged[(f"pictures/{name}", 4)]
             for name in FIGURES)  # two steps of training show
  assert sorted(p.stem for p in (eval_dir / "pictures" / "step_2").iterdir()) == list(FIGURES)
  for name in FIGURES + IMAGES:  # the final pictures are where they always were
    assert (eval_dir / f"{name}.png").read_bytes() == logged[(f"pictures/{name}", 4)]
    assert f"![{name}.png]({name}.png)" in (eval_dir / "report.md").read_text()

  # Step 2's pictures are those of step 2's parameters (the checkpoint), drawn anew.
  setup = setup_lib.setup(config)
  redraw = evaluation.Evaluators(config, setup, tmp_path / "redraw")
  redraw.run(jax.device_get(params_at(tmp_path, config, 2)), ["figures"])
  for name in FIGURES:
    assert (tmp_path / "redraw" / "eval" / f"{name}.png").read_bytes() == (
        logged[(f"pictures/{name}", 2)])
