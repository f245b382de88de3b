"""style_transfer: the attribute functions against a float64 loop reference, and known answers
on synthetic digits whose style (slant, width, stroke thickness) is drawn and rendered here:
a decoder that copies the style code transfers it near the ceiling, one that ignores it
transfers nothing, and retrieval sits at chance for the latter."""

import math

import jax
import ml_collections
import numpy as np
import pytest

from mlvae_jax import configs, evaluation
from mlvae_jax.evaluation import style_transfer
from mlvae_jax.training import setup as setup_lib

SIZE = 28
CLASSES = 4


def reference_slant_width(image: np.ndarray) -> tuple[float, float]:
  """Second moments by explicit loops over pixels (float64)."""
  mass = r_sum = c_sum = 0.0
  for r in range(image.shape[0]):
    for c in range(image.shape[1]):
      mass += image[r, c]
      r_sum += image[r, c] * r
      c_sum += image[r, c] * c
  r_bar, c_bar = r_sum / mass, c_sum / mass
  rr = rc = cc = 0.0
  for r in range(image.shape[0]):
    for c in range(image.shape[1]):
      rr += image[r, c] * (r - r_bar) ** 2
      rc += image[r, c] * (r - r_bar) * (c - c_bar)
      cc += image[r, c] * (c - c_bar) ** 2
  rr, rc, cc = rr / mass, rc / mass, cc / mass
  return rc / rr, math.sqrt(cc - rc * rc / rr)


def reference_thickness(image: np.ndarray) -> float:
  """2 * mass / total variation by loops over the image padded with one blank pixel."""
  padded = np.zeros((image.shape[0] + 2, image.shape[1] + 2))
  padded[1:-1, 1:-1] = image
  edge = 0.0
  for r in range(padded.shape[0] - 1):
    for c in range(padded.shape[1] - 1):
      edge += math.hypot(padded[r + 1, c] - padded[r, c], padded[r, c + 1] - padded[r, c])
  return 2 * image.sum() / edge


def render(label: int, slant: float, width: float, thick: float) -> np.ndarray:
  """A synthetic 'digit': class 0 one upright stroke pair, 1 a box, 2 a 'T', 3 an 'L', of
  half-width `width` / 2, sheared by `slant` (columns per row), strokes `thick` pixels wide."""
  half, top, bottom = width / 2, 5.0, 22.0
  segments = {
      0: [((top, -half), (bottom, -half)), ((top, half), (bottom, half))],
      1: [((top, -half), (bottom, -half)), ((top, half), (bottom, half)),
          ((top, -half), (top, half)), ((bottom, -half), (bottom, half))],
      2: [((top, -half), (top, half)), ((top, 0.0), (bottom, 0.0))],
      3: [((top, -half), (bottom, -half)), ((bottom, -half), (bottom, half))],
  }[label]
  rows, cols = np.meshgrid(np.arange(SIZE, dtype=float), np.arange(SIZE, dtype=float), indexing="ij")
  centre = (SIZE - 1) / 2
  unsheared = cols - centre - slant * (rows - centre)  # the column before the shear
  distance = np.full(rows.shape, np.inf)
  for (r0, c0), (r1, c1) in segments:
    d = np.array([r1 - r0, c1 - c0])
    t = np.clip(((rows - r0) * d[0] + (unsheared - c0) * d[1]) / (d @ d), 0.0, 1.0)
    distance = np.minimum(distance, np.hypot(rows - r0 - t * d[0], unsheared - c0 - t * d[1]))
  return np.clip(thick / 2 + 0.5 - distance, 0.0, 1.0)


def draw_styles(n: int, rng: np.random.Generator) -> np.ndarray:
  return np.stack([rng.uniform(-0.35, 0.35, n), rng.uniform(6.0, 12.0, n),
                   rng.uniform(1.5, 4.0, n)], axis=1)


def render_all(labels: np.ndarray, styles: np.ndarray) -> np.ndarray:
  return np.stack([render(int(k), *s) for k, s in zip(labels, styles)])


@pytest.fixture(scope="module")
def world():
  rng = np.random.default_rng(0)
  n = 400
  labels = rng.integers(0, CLASSES, n)
  styles = draw_styles(n, rng)
  images = render_all(labels, styles)
  content = np.eye(CLASSES)[labels]
  a = rng.integers(0, n, 600)
  b = (a + rng.integers(1, n, 600)) % n
  keep = labels[a] != labels[b]
  return images, labels, content, styles, a[keep], b[keep]


def test_attributes_match_the_float64_loop_reference():
  rng = np.random.default_rng(1)
  images = [render(k, *draw_styles(1, rng)[0]) for k in range(CLASSES)]
  images += [rng.uniform(0, 1, (SIZE, SIZE)) * (rng.uniform(0, 1, (SIZE, SIZE)) > 0.6)]
  images += [np.pad(np.ones((3, 3)), ((0, SIZE - 3), (0, SIZE - 3)))]  # ink on the border
  got = style_transfer.attributes(np.stack(images))
  for image, row in zip(images, got):
    slant, width = reference_slant_width(image)
    np.testing.assert_allclose(row, [slant, width, reference_thickness(image)], rtol=1e-10,
                               atol=1e-12)


def test_attributes_follow_the_drawn_style_and_read_channels():
  base = dict(label=0, slant=0.0, width=8.0, thick=2.0)
  for j, key, values in ((0, "slant", (-0.3, 0.0, 0.3)), (1, "width", (6.0, 9.0, 12.0)),
                         (2, "thick", (1.5, 2.5, 3.5))):
    images = np.stack([render(**{**base, key: v}) for v in values])
    assert np.all(np.diff(style_transfer.attributes(images)[:, j]) > 0), key
  gray = render(**base)[None]
  np.testing.assert_allclose(style_transfer.attributes(np.repeat(gray[..., None], 3, -1)),
                             style_transfer.attributes(gray))


def test_an_empty_image_has_no_attributes_and_does_not_break_a_correlation():
  values = style_transfer.attributes(np.zeros((1, SIZE, SIZE)))
  assert np.all(np.isnan(values))
  assert style_transfer.correlation(np.array([1.0, 2.0, np.nan, 4.0]),
                                    np.array([2.0, 4.0, 5.0, 8.0])) == pytest.approx(1.0)
  assert style_transfer.correlation(np.ones(5), np.arange(5.0)) == 0.0


class RenderingModel:
  """Decodes by rendering (class from content, the style code as drawn, or `fixed_style`) and
  re-encodes exactly what it rendered: a perfect style encoder for its own images."""

  def __init__(self, fixed_style: np.ndarray | None = None):
    self.fixed_style = fixed_style
    self.rendered: dict[bytes, np.ndarray] = {}

  def decode(self, content: np.ndarray, style: np.ndarray) -> np.ndarray:
    if self.fixed_style is not None:
      style = np.broadcast_to(self.fixed_style, style.shape)
    images = render_all(content.argmax(1), style)
    self.rendered.update({image.tobytes(): s for image, s in zip(images, style)})
    return images

  def encode_style(self, images: np.ndarray) -> np.ndarray:
    return np.stack([self.rendered[image.tobytes()] for image in images])


def test_a_decoder_that_copies_style_transfers_it_near_the_ceiling(world):
  images, labels, content, styles, a, b = world
  model = RenderingModel()
  metrics = style_transfer.transfer_scores(images, labels, content, styles, a, b, model.decode,
                                           model.encode_style, candidates=10)
  for name in style_transfer.ATTRIBUTES:
    assert metrics[f"{name}/ceiling"] == pytest.approx(1.0)  # a reconstruction is its input
    assert metrics[f"{name}/ratio"] > 0.8, (name, metrics)
    assert abs(metrics[f"{name}/content"]) < 0.2, (name, metrics)
  assert metrics["retrieval"] == metrics["retrieval_ceiling"] == 1.0


def test_a_decoder_that_ignores_style_scores_near_zero(world):
  images, labels, content, styles, a, b = world
  model = RenderingModel(fixed_style=styles.mean(0))
  metrics = style_transfer.transfer_scores(images, labels, content, styles, a, b, model.decode,
                                           model.encode_style, candidates=10)
  for name in style_transfer.ATTRIBUTES:
    assert abs(metrics[f"{name}/style"]) < 0.15, (name, metrics)
    assert abs(metrics[f"{name}/ceiling"]) < 0.15, (name, metrics)  # nor do reconstructions
  assert metrics["retrieval"] == pytest.approx(0.1, abs=0.05)  # chance: one in 10 candidates


def test_a_decoder_whose_style_follows_the_content_source_is_seen_as_such(world):
  """Style rendered from the content image's own code: the swap tracks the content source."""
  images, labels, content, styles, a, b = world
  metrics = style_transfer.transfer_scores(
      images, labels, np.concatenate([content, styles], 1), styles, a, b,
      decode=lambda c, s: render_all(c[:, :CLASSES].argmax(1), c[:, CLASSES:]),
      encode_style=style_transfer.attributes, candidates=10)
  for name in style_transfer.ATTRIBUTES:
    assert metrics[f"{name}/content"] > 0.8 and abs(metrics[f"{name}/style"]) < 0.2, metrics


def test_retrieval_needs_a_full_block_and_finds_exact_matches():
  codes = np.random.default_rng(2).normal(size=(25, 3))
  assert style_transfer.retrieval_rate(codes, codes, 10) == 1.0
  with pytest.raises(ValueError, match="at least 30 pairs"):
    style_transfer.retrieval_rate(codes, codes, 30)


def test_the_registered_evaluator_runs_on_a_model_and_names_its_metrics(tmp_path):
  config = configs.base_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.batch_size, config.data.num_groups = 64, 8
  config.model.hidden = 32
  config.evals = ml_collections.ConfigDict(
      {"transfer": configs.evaluator("style_transfer", num_pairs=40, candidates=10)})
  setup = setup_lib.setup(config)
  metrics = evaluation.Evaluators(config, setup, tmp_path).run(jax.device_get(setup.init().params))
  expected = {f"transfer/{n}/{k}" for n in style_transfer.ATTRIBUTES
              for k in ("style", "content", "ceiling", "ratio")}
  assert expected | {"transfer/ratio_min", "transfer/retrieval", "transfer/retrieval_ceiling",
                     "transfer/retrieval_chance"} == set(metrics)
  assert 0.0 <= metrics["transfer/retrieval"] <= 1.0


def test_bad_settings_are_named(tmp_path):
  config = configs.base_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.evals = ml_collections.ConfigDict(
      {"transfer": configs.evaluator("style_transfer", num_pairs=5, candidates=10)})
  with pytest.raises(Exception, match="set candidates >= 2 and num_pairs >= candidates"):
    evaluation.Evaluators(config, setup_lib.setup(config), tmp_path)
