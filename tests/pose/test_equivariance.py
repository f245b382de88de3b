"""The angle-equivariance term and the centroid turn against float64 NumPy loop references."""

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import configs, models, objectives
from mlvae_jax.objectives import terms
from mlvae_jax.pose import equivariance, warp
from tests import reference


def reference_centroid(image: np.ndarray) -> tuple[float, float]:
  """Centre of mass of an [H, W, C] image's positive values, pixel by pixel, in [-1, 1]."""
  height, width = image.shape[:2]
  total = sx = sy = 0.0
  for i in range(height):
    for j in range(width):
      w = float(np.sum(np.maximum(image[i, j].astype(np.float64), 0.0)))
      total += w
      sx += w * ((j + 0.5) / width * 2 - 1)
      sy += w * ((i + 0.5) / height * 2 - 1)
  return (sx / total, sy / total) if total > 0 else (0.0, 0.0)


def reference_equivariance(angle, angle_var, turned, turned_var, turn, mask, symmetry) -> float:
  rows = [(1 - np.cos(symmetry * (float(turned[i]) - float(angle[i]) - float(turn[i]))))
          / symmetry**2 + (float(angle_var[i]) + float(turned_var[i])) / 2
          for i in np.nonzero(mask)[0]]
  return float(np.mean(rows)) if rows else 0.0


@settings(max_examples=25, deadline=None)
@given(images=hnp.arrays(np.float32, (3, 7, 6, 2), elements=st.floats(-1, 1, width=32)),
       blank=st.booleans(), turns=hnp.arrays(np.float32, 3, elements=st.floats(-4, 4, width=32)))
def test_centroids_and_turns_match_the_reference(images, blank, turns):
  """Random images with negative values (ignored by the centroid), one of them possibly blank
  (its centre is the origin), turned by any angle about their centroids."""
  if blank:
    images[1] = -np.abs(images[1])
  got_centres = equivariance.intensity_centroids(jnp.asarray(images))
  want_centres = [reference_centroid(image) for image in images]
  np.testing.assert_allclose(got_centres, want_centres, atol=1e-5)
  got = equivariance.turn_about_centroids(jnp.asarray(images), jnp.asarray(turns))
  want = [reference.rigid_warp(images[i], turns[i], want_centres[i], centre=want_centres[i])
          for i in range(3)]
  np.testing.assert_allclose(got, np.stack(want), atol=1e-4)


def _elongated_blob(size: int = 32) -> np.ndarray:
  """A canvas [1, size, size, 1]: an elongated Gaussian centred on the origin (the same only
  after a half turn), well inside the frame."""
  y, x = np.meshgrid(*(2 * [(np.arange(size) + 0.5) / size * 2 - 1]), indexing="ij")
  return np.exp(-(x / 0.4) ** 2 - (y / 0.15) ** 2)[None, :, :, None]


def test_turning_a_decoded_image_adds_the_turn_to_the_pose_angle():
  """The term's premise: the decoder draws its canvas at angle a about the shift t; that image
  turned about its centroid (t) by delta is the canvas drawn at angle a + delta."""
  canvas = jnp.float32(_elongated_blob())
  angle, shift, delta = jnp.float32([0.7]), jnp.float32([[0.15, -0.1]]), jnp.float32([0.35])
  drawn = warp.rigid_warp(canvas, angle, shift)
  np.testing.assert_allclose(equivariance.intensity_centroids(drawn), shift, atol=0.005)
  turned = equivariance.turn_about_centroids(drawn, delta)
  # up to the blur of sampling twice (peak 1; the turned-back-wrong sense is off by 0.45)
  np.testing.assert_allclose(turned, warp.rigid_warp(canvas, angle + delta, shift), atol=0.08)
  assert np.max(np.abs(turned - warp.rigid_warp(canvas, angle - delta, shift))) > 0.3


def test_known_turns():
  image = jnp.float32(_elongated_blob())
  np.testing.assert_allclose(equivariance.turn_about_centroids(image, jnp.zeros(1)), image, atol=1e-5)
  centred = image + image[:, ::-1, ::-1]  # centroid exactly at the origin
  quarter = equivariance.turn_about_centroids(centred, jnp.float32([np.pi / 2]))
  np.testing.assert_allclose(quarter, warp.rigid_warp(centred, jnp.float32([np.pi / 2]),
                                                      jnp.zeros((1, 2))), atol=1e-5)
  np.testing.assert_allclose(quarter[0, ..., 0], np.rot90(centred[0, ..., 0]), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), symmetry=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**31 - 1))
def test_term_matches_the_reference_on_padded_rows(n, symmetry, seed):
  rng = np.random.default_rng(seed)
  angle, turned = rng.uniform(-10, 10, size=(2, n)).astype(np.float32)
  angle_var, turned_var = np.exp(rng.uniform(-30, 3, size=(2, n))).astype(np.float32)
  turn = rng.uniform(-np.pi / symmetry, np.pi / symmetry, size=n).astype(np.float32)
  mask = rng.uniform(size=n) < 0.7
  angle[~mask], angle_var[~mask] = 1e4, 1e4  # padding rows hold garbage that must not count
  args = (angle, angle_var, turned, turned_var, turn, mask)
  got = equivariance.angle_equivariance(*map(jnp.asarray, args), symmetry)
  np.testing.assert_allclose(float(got), reference_equivariance(*args, symmetry), rtol=1e-4, atol=1e-5)


def _score(angle, turned, turn, symmetry, var=0.0, mask=None):
  var = jnp.full(angle.shape, var, jnp.float32)
  mask = jnp.ones(angle.shape, bool) if mask is None else mask
  return float(equivariance.angle_equivariance(angle, var, turned, var, turn, mask, symmetry))


def test_known_answers():
  rng = np.random.default_rng(0)
  angle = jnp.float32(rng.uniform(-3, 3, size=8))
  turn = jnp.float32(rng.uniform(-0.7, 0.7, size=8))
  # a pinned equivariant angle costs nothing, also off by a symmetry (a square turned by pi / 2)
  symmetric_jumps = jnp.float32(rng.integers(-2, 3, size=8)) * np.pi / 2
  assert _score(angle, angle + turn + symmetric_jumps, turn, 4) < 1e-6
  # ... but a quarter-turn jump is an error for a shape without that symmetry
  assert _score(angle, angle + turn + np.pi / 2, turn, 1) > 0.9
  # an angle that ignores the turn costs (1 - cos(K turn)) / K^2; a small error e about e^2 / 2
  np.testing.assert_allclose(_score(angle, angle, turn, 4),
                             np.mean((1 - np.cos(4 * np.asarray(turn))) / 16), rtol=1e-5)
  np.testing.assert_allclose(_score(angle, angle + turn + 0.01, turn, 2), 0.01**2 / 2, rtol=1e-3)
  # the spread: an equivariant angle with variance v in both passes costs v, as the squared
  # error of two independent draws would
  np.testing.assert_allclose(_score(angle, angle + turn, turn, 4, var=0.3), 0.3, rtol=1e-5)
  # no valid row: 0, not NaN, and no gradient
  none = jnp.zeros(8, bool)
  assert _score(angle, angle, turn, 1, mask=none) == 0.0
  grad = jax.grad(equivariance.angle_equivariance)(angle, angle, angle, angle, turn, none, 1)
  assert np.all(np.asarray(grad) == 0.0)


def test_the_dedicated_angle_posterior_is_pi_s0():
  rng = np.random.default_rng(1)
  mu, logvar = rng.normal(size=(2, 5, 4)).astype(np.float32)
  logvar[0, 0] = -30.0  # extreme log-variances stay finite
  logvar[1, 0] = 20.0
  mean, var = warp.dedicated_angle_posterior(jnp.asarray(mu), jnp.asarray(logvar))
  np.testing.assert_allclose(mean, np.pi * mu[:, 0].astype(np.float64), rtol=1e-6)
  np.testing.assert_allclose(var, np.pi**2 * np.exp(logvar[:, 0].astype(np.float64)), rtol=1e-5)


def _tiny_config(weight: float):
  config = configs.base_config()
  config.model.update(family="conv", hidden=16, content_dim=2, style_dim=4,
                      decoder_warp="rigid_dedicated")
  config.data.num_groups = 3
  config.objective.angle_equivariance_weight = weight
  config.objective.angle_equivariance_symmetry = 4
  return config


def test_the_loss_adds_the_weighted_term_and_leaves_the_elbo():
  rng = np.random.default_rng(2)
  ids, mask = reference.random_ragged_ids(rng, 6, 3)
  batch = {"x": jnp.float32(rng.uniform(size=(6, 32, 32, 1))), "group_ids": jnp.asarray(ids),
           "mask": jnp.asarray(mask)}
  config = _tiny_config(0.0)
  model = models.build_model(config.model, (32, 32, 1))
  params = model.init(jax.random.key(0), batch["x"])["params"]
  key = jax.random.key(5)
  paper_loss, paper = objectives.make_loss_fn(model, config)(params, batch, key, jnp.int32(3))
  assert "angle_equivariance" not in paper
  loss, metrics = objectives.make_loss_fn(model, _tiny_config(250.0))(params, batch, key, jnp.int32(3))
  posterior = model.apply({"params": params}, batch["x"], method="encode")
  inputs = objectives.TermInputs(
      posterior, batch, batch["group_ids"], 3, rng=key, encoder_input=batch["x"],
      encode=lambda x: model.apply({"params": params}, x, method="encode"))
  term = terms.angle_equivariance(inputs, _tiny_config(250.0).objective)
  assert float(term) > 0
  np.testing.assert_allclose(float(metrics["angle_equivariance"]), float(term), rtol=1e-6)
  np.testing.assert_allclose(float(loss), float(paper_loss) + 250.0 * float(term), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-6)
  np.testing.assert_allclose(float(metrics["elbo"]), float(paper["elbo"]), rtol=1e-6)
  grads = jax.grad(lambda p: objectives.make_loss_fn(model, _tiny_config(250.0))(
      p, batch, key, jnp.int32(3))[0])(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("setting, value", [
    ("angle_equivariance_weight", -1.0), ("angle_equivariance_symmetry", 0),
    ("angle_equivariance_max_turn", 0.0), ("angle_equivariance_max_turn", 1.0),  # > pi / 4
])
def test_bad_settings_are_named(setting, value):
  config = _tiny_config(1.0).objective
  config[setting] = value
  with pytest.raises(ValueError, match="angle_equivariance_weight is .* max turn in"):
    objectives.check_objective_config(config)


def test_the_term_needs_the_dedicated_warp():
  config = _tiny_config(1.0)
  config.model.decoder_warp = "rigid"
  model = models.build_model(config.model, (32, 32, 1))
  with pytest.raises(ValueError, match="decoder_warp=rigid_dedicated or the weight to 0"):
    objectives.make_loss_fn(model, config)
