"""Figures: which codes each grid cell decodes, grid and PNG sizes, and the curve plot."""

import struct
import zlib

import jax
import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from mlvae_jax import configs, evaluation, inference, models
from mlvae_jax.training import setup as setup_lib
from mlvae_jax.evaluation import figures
from mlvae_jax.evaluation.images import upscale
from mlvae_jax.evaluation.png import tile, write_png
from tests import reference

CONTENT_DIM, STYLE_DIM = 3, 2


def decode_png(data: bytes) -> np.ndarray:
  """Pixels [H, W] or [H, W, 3] of an 8-bit grey or RGB PNG with filter 0 on every row."""
  assert data[:8] == b"\x89PNG\r\n\x1a\n"
  pos, chunks = 8, {}
  while pos < len(data):
    (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
    chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + length]
    pos += 12 + length
  width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
  assert depth == 8 and colour in (0, 2)
  channels = 3 if colour == 2 else 1
  rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
  assert np.all(rows[:, 0] == 0)
  pixels = rows[:, 1:].reshape(height, width, channels)
  return pixels[..., 0] if channels == 1 else pixels


@pytest.fixture(scope="module")
def model_and_params():
  config = configs.base_config()
  config.model.update(hidden=16, content_dim=CONTENT_DIM, style_dim=STYLE_DIM)
  model = models.build_model(config.model, (8, 8, 1))
  params = model.init(jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32))["params"]
  return model, params


@pytest.fixture
def codes_as_images(monkeypatch):
  """Decoding that returns its input code as a 1x1 'image' with one channel per dimension."""

  def decode(model, params, content, style):
    leading = np.broadcast_shapes(content.shape[:-1], style.shape[:-1])
    code = np.concatenate([np.broadcast_to(content, (*leading, CONTENT_DIM)),
                           np.broadcast_to(style, (*leading, STYLE_DIM))], axis=-1)
    return code[..., None, None, :]

  monkeypatch.setattr(inference, "decode", decode)


def test_prior_grid_rows_share_content_and_columns_share_style(model_and_params, codes_as_images):
  model, params = model_and_params
  grid = figures.prior_grid(model, params, 4, 5, np.random.default_rng(0))
  assert grid.shape == (4, 5, 1, 1, CONTENT_DIM + STYLE_DIM)
  code = grid[:, :, 0, 0]
  np.testing.assert_array_equal(code[:, :, :CONTENT_DIM], np.repeat(code[:, :1, :CONTENT_DIM], 5, 1))
  np.testing.assert_array_equal(code[:, :, CONTENT_DIM:], np.repeat(code[:1, :, CONTENT_DIM:], 4, 0))
  assert len(np.unique(code[:, 0, 0])) == 4 and len(np.unique(code[0, :, -1])) == 5


def test_traversal_row_i_sweeps_dimension_i_only(model_and_params, codes_as_images):
  model, params = model_and_params
  x = np.random.default_rng(1).random((8, 8, 1), dtype=np.float32)
  values = [-2.0, 0.0, 2.0]
  grid = figures.traversal_grid(model, params, x, values)
  posterior = inference.encode(model, params, x)
  anchor = np.concatenate([posterior.content_mu, posterior.style_mu])
  assert grid.shape == (CONTENT_DIM + STYLE_DIM, 3, 1, 1, CONTENT_DIM + STYLE_DIM)
  for i in range(CONTENT_DIM + STYLE_DIM):
    for j, value in enumerate(values):
      expected = anchor.copy()
      expected[i] = value
      np.testing.assert_allclose(grid[i, j, 0, 0], expected, rtol=1e-6)


def test_interpolation_runs_between_the_groups_pooled_content(model_and_params, codes_as_images):
  model, params = model_and_params
  rng = np.random.default_rng(2)
  first, second, style_x = (rng.random((n, 8, 8, 1), dtype=np.float32) for n in (3, 5, 2))
  grid = figures.interpolation_grid(model, params, first, second, style_x, steps=5)
  assert grid.shape == (2, 5, 1, 1, CONTENT_DIM + STYLE_DIM)
  ends = []
  for group in (first, second):
    posterior = inference.encode(model, params, group)
    ends.append(reference.product_of_normals(posterior.content_mu, posterior.content_logvar)[0])
  content = grid[..., 0, 0, :CONTENT_DIM]
  np.testing.assert_allclose(content[:, 0], np.tile(ends[0], (2, 1)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(content[:, -1], np.tile(ends[1], (2, 1)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(content[:, 2], np.tile((ends[0] + ends[1]) / 2, (2, 1)), rtol=1e-4, atol=1e-6)
  style = inference.encode(model, params, style_x).style_mu
  np.testing.assert_allclose(grid[..., 0, 0, CONTENT_DIM:], np.repeat(style[:, None], 5, 1), rtol=1e-6)


def test_pictures_decode_to_the_tiled_size(model_and_params, tmp_path):
  model, params = model_and_params
  grid = figures.traversal_grid(model, params, np.zeros((8, 8, 1), np.float32), np.linspace(-2, 2, 7))
  image = tile(upscale(grid, 48))  # 8-pixel cells enlarged 6x to 48, 1-pixel gaps
  write_png(tmp_path / "traversals.png", image)
  pixels = decode_png((tmp_path / "traversals.png").read_bytes())
  rows, cols = CONTENT_DIM + STYLE_DIM, 7
  assert pixels.shape == (rows * 49 + 1, cols * 49 + 1)
  np.testing.assert_array_equal(pixels[0], 255)  # the padding line above the first row
  assert 0 < pixels[1:49, 1:49].mean() < 255  # a decoded cell, neither blank nor black


def test_curve_plot_is_an_rgb_image_with_drawn_lines(tmp_path):
  curve = figures.Curve(np.array([1, 2, 4, 8, 16]), np.array([0.3, 0.5, 0.7, 0.8, 0.85]),
                        np.array([-1.0, -1.6, -2.3, -3.0, -3.7]))
  image = figures.curve_plot({"unseen": curve, "test": curve._replace(accuracy=curve.accuracy + 0.1)},
                             chance=0.1, title="few-shot")
  write_png(tmp_path / "curve.png", image)
  pixels = decode_png((tmp_path / "curve.png").read_bytes())
  assert pixels.shape == (320, 800, 3)
  coloured = np.ptp(pixels.astype(int), axis=-1) > 60  # line colours, not grey text or axes
  assert coloured[:, :400].sum() > 200 and coloured[:, 400:].sum() > 200
  with pytest.raises(ValueError, match="at least one curve"):
    figures.curve_plot({})


def test_figures_evaluator_writes_its_pictures(tmp_path):
  config = configs.base_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.batch_size, config.data.num_groups = 64, 8
  config.model.update(hidden=16, content_dim=CONTENT_DIM, style_dim=STYLE_DIM)
  config.evals = ml_collections.ConfigDict({"pictures": configs.evaluator(
      "figures", grid=4, traversal_steps=5, interpolation_steps=6, interpolation_rows=3)})
  setup = setup_lib.setup(config)
  params = jax.device_get(setup.init().params)
  assert evaluation.Evaluators(config, setup, tmp_path).run(params) == {}
  cell = 49  # 8-pixel digits enlarged 6x to the default min_pixels 48, 1-pixel gaps
  for name, (rows, cols) in {"prior": (4, 4), "traversals": (CONTENT_DIM + STYLE_DIM, 5),
                             "interpolation": (3, 6)}.items():
    pixels = decode_png((tmp_path / "eval" / f"{name}.png").read_bytes())
    assert pixels.shape == (rows * cell + 1, cols * cell + 1), name


def _tensorboard_images(logdir):
  """{tag: (step, Summary.Image)} of every image in the event files of `logdir`."""
  images = {}
  for path in logdir.glob("events.out.tfevents.*"):
    data, pos = path.read_bytes(), 0
    while pos < len(data):  # TFRecord: length, its crc, the record, its crc
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 16 + length
      for value in event.summary.value:
        if value.HasField("image"):
          images[value.tag] = (event.step, value.image)
  return images


def test_few_shot_curve_on_unseen_groups_is_plotted_reported_and_in_tensorboard(tmp_path):
  config = configs.base_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.batch_size, config.data.num_groups = 64, 8
  config.data.unseen_groups = "8,9"
  config.model.update(hidden=16, content_dim=CONTENT_DIM, style_dim=STYLE_DIM)
  config.evals = ml_collections.ConfigDict({
      "fewshot": configs.evaluator("accumulation", split="unseen", support_sizes=(1, 3, 16),
                                   repeats=1),
      "pictures": configs.evaluator("figures", grid=2, split="unseen"),
  })
  setup = setup_lib.setup(config)
  evaluators = evaluation.Evaluators(config, setup, tmp_path)
  metrics = evaluators.run(jax.device_get(setup.init().params))
  assert all(f"fewshot/accuracy_k{k}" in metrics for k in (1, 3, 16))
  evaluators.write(metrics, step=7)
  eval_dir = tmp_path / "eval"
  plot = decode_png((eval_dir / "accumulation_unseen.png").read_bytes())
  assert plot.shape == (320, 800, 3)
  report = (eval_dir / "report.md").read_text()
  names = ("accumulation_unseen", "interpolation", "prior", "traversals")
  assert all(f"![{name}.png]({name}.png)" in report for name in names)
  images = _tensorboard_images(tmp_path / "tensorboard")
  assert sorted(images) == [f"pictures/{name}" for name in names]
  for name in names:
    step, image = images[f"pictures/{name}"]
    pixels = decode_png(image.encoded_image_string)
    assert step == 7 and (image.height, image.width) == pixels.shape[:2]
    assert image.colorspace == (3 if pixels.ndim == 3 else 1)
    assert image.encoded_image_string == (eval_dir / f"{name}.png").read_bytes()
