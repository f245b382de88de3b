"""PNG files decoded: the writer's pixels, tile layout, and the image grids of a trained run
(sizes, padding, which image sits in which cell)."""

import struct
import zlib

import numpy as np
import pytest

from mlvae_jax import configs, data, inference, train
from mlvae_jax.evaluation.png import tile, write_png
from tests.evaluation.png_decode import PNGError, SIGNATURE, decode_png
from tests.training.test_train import smoke_config


def _encode_with_filter(pixels: np.ndarray, filter_type: int) -> bytes:
  """A PNG of uint8 `pixels` [H, W, C] with every scanline filtered by `filter_type`."""
  height, width, channels = pixels.shape
  rows = pixels.reshape(height, -1).astype(np.int64)
  up = np.vstack([np.zeros_like(rows[:1]), rows[:-1]])
  shift = lambda a: np.hstack([np.zeros_like(a[:, :channels]), a[:, :-channels]])  # noqa: E731
  left, up_left = shift(rows), shift(up)
  p = left + up - up_left
  pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
  paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
  predictor = [0, left, up, (left + up) // 2, paeth][filter_type]
  filtered = ((rows - predictor) % 256).astype(np.uint8)
  raw = b"".join(bytes([filter_type]) + row.tobytes() for row in filtered)

  def chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

  header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
  return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("filter_type", range(5))
@pytest.mark.parametrize("channels", [1, 3])
def test_decoder_undoes_every_filter(filter_type, channels):
  pixels = np.random.default_rng(filter_type).integers(0, 256, (7, 5, channels)).astype(np.uint8)
  decoded = decode_png(_encode_with_filter(pixels, filter_type))
  np.testing.assert_array_equal(decoded, pixels[..., 0] if channels == 1 else pixels)


def test_decoder_rejects_a_corrupted_file(tmp_path):
  write_png(tmp_path / "a.png", np.zeros((3, 3)))
  corrupted = bytearray((tmp_path / "a.png").read_bytes())
  corrupted[-20] ^= 0xFF  # a byte of the image data
  with pytest.raises(PNGError, match="CRC"):
    decode_png(bytes(corrupted))


@pytest.mark.parametrize("shape", [(6, 9), (6, 9, 1), (6, 9, 3)])
def test_written_pixels_read_back(tmp_path, shape):
  levels = np.random.default_rng(0).integers(0, 256, shape)
  image = levels / 255.0
  image.flat[:4] = [-0.3, 1.7, 10.49 / 255, 10.51 / 255]  # clipped, and rounded to nearest
  levels.flat[:4] = [0, 255, 10, 11]
  write_png(tmp_path / "image.png", image)
  decoded = decode_png(tmp_path / "image.png")
  assert decoded.shape == (shape[:2] if len(shape) == 2 or shape[2] == 1 else shape)
  np.testing.assert_array_equal(decoded, levels.reshape(decoded.shape))


def test_tile_puts_cell_r_c_at_row_r_column_c_between_padding(tmp_path):
  rows, cols, height, width, pad = 2, 3, 4, 5, 2
  rng = np.random.default_rng(1)
  images = rng.integers(0, 200, (rows, cols, height, width, 1)) / 255.0
  canvas = tile(images, pad=pad, pad_value=1.0)
  write_png(tmp_path / "grid.png", canvas)
  decoded = decode_png(tmp_path / "grid.png")
  assert decoded.shape == (rows * (height + pad) + pad, cols * (width + pad) + pad)
  padding = np.ones(decoded.shape, bool)
  for r in range(rows):
    for c in range(cols):
      top, left = pad + r * (height + pad), pad + c * (width + pad)
      cell = decoded[top:top + height, left:left + width]
      np.testing.assert_array_equal(cell, np.round(images[r, c, ..., 0] * 255))
      padding[top:top + height, left:left + width] = False
  assert (decoded[padding] == 255).all()


# The digits run's grids: 8 x 8 images enlarged 6x to 48 pixels, 1 pixel of white padding.
CELL, FACTOR, GRID = 48, 6, 8


def _cells(png: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """[rows, cols, 8, 8] levels of a decoded grid, after checking its size and padding."""
  assert png.shape == (rows * (CELL + 1) + 1, cols * (CELL + 1) + 1)
  assert (png[::CELL + 1] == 255).all() and (png[:, ::CELL + 1] == 255).all()
  cells = np.stack([np.stack([png[1 + r * (CELL + 1):(r + 1) * (CELL + 1), 1 + c * (CELL + 1):(c + 1) * (CELL + 1)]
                              for c in range(cols)]) for r in range(rows)])
  small = cells[:, :, ::FACTOR, ::FACTOR]
  np.testing.assert_array_equal(cells, small.repeat(FACTOR, axis=2).repeat(FACTOR, axis=3))
  return small.astype(np.int64)


def _find(cells: np.ndarray, split: data.Split) -> np.ndarray:
  """Index in `split` of each cell's image (exactly, as 8-bit levels); fails if absent."""
  index = {np.round(x[..., 0] * 255).astype(np.int64).tobytes(): i for i, x in enumerate(split.x)}
  found = [index.get(cell.tobytes()) for cell in cells]
  assert None not in found, "a source cell is not an image of the held-out split"
  return np.array(found)


def _assert_levels(cells: np.ndarray, images: np.ndarray) -> None:
  """8-bit cells equal float images up to the writer's rounding."""
  np.testing.assert_array_less(np.abs(cells - images[..., 0] * 255), 0.5 + 1e-3)


@pytest.fixture(scope="module")
def grids_run(tmp_path_factory):
  """A one-step digits smoke run that writes the grids (of the held-out split, evals_split), restored on one device."""
  workdir = tmp_path_factory.mktemp("grids")
  config = smoke_config(**{"train.num_steps": 1})
  config.evals.images = configs.evaluator("images", grid=GRID, min_pixels=CELL)
  final = train.train_and_evaluate(config, str(workdir))
  trained = inference.load(str(workdir))
  return workdir / "eval", final, trained, data.load_split(trained.config.data, trained.config.evals_split)


def test_swap_grid_rows_keep_content_columns_keep_style(grids_run):
  eval_dir, _, trained, split = grids_run
  cells = _cells(decode_png(eval_dir / "swap.png"), GRID + 1, GRID + 1)
  assert (cells[0, 0] == 255).all()  # the blank corner
  content = split.x[_find(cells[1:, 0], split)]
  style = split.x[_find(cells[0, 1:], split)]
  expected = inference.swap(trained.model, trained.params, content, style)
  _assert_levels(cells[1:, 1:], expected)
  # The check sees the orientation: the transposed grid differs by more than the rounding.
  assert np.abs(expected - expected.transpose(1, 0, 2, 3, 4)).max() > 2 / 255


def test_reconstruction_grid_has_originals_over_reconstructions(grids_run):
  eval_dir, final, trained, split = grids_run
  cells = _cells(decode_png(eval_dir / "reconstructions.png"), 2, 2 * GRID)
  originals = split.x[_find(cells[0], split)]
  recon = inference.reconstruct(trained.model, trained.params, originals)
  _assert_levels(cells[1], recon)
  (mse_key,) = [key for key in final if key.endswith("/reconstruction_mse")]
  np.testing.assert_allclose(final[mse_key], np.mean((recon - originals) ** 2), rtol=1e-5)
