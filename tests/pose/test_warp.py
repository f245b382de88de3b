"""The style-posed decoder warp (model.decoder_warp='rigid') against a pixel-loop reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlvae_jax import configs, models
from mlvae_jax.pose import warp
from tests import reference


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), height=st.integers(1, 9), width=st.integers(1, 9),
       channels=st.integers(1, 3), reach=st.sampled_from([0.1, 1.0, 3.0]))
def test_rigid_warp_matches_reference(seed, height, width, channels, reach):
  """Random images, angles of any size and shifts up to far beyond the canvas (edge repeats)."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(3, height, width, channels))
  angles = rng.uniform(-2 * np.pi, 2 * np.pi, size=3) * reach
  shifts = rng.uniform(-1, 1, size=(3, 2)) * reach
  got = warp.rigid_warp(jnp.float32(images), jnp.float32(angles), jnp.float32(shifts))
  want = [reference.rigid_warp(images[i], angles[i], shifts[i]) for i in range(3)]
  np.testing.assert_allclose(got, np.stack(want), rtol=1e-4, atol=1e-4)


def test_known_poses():
  """No pose is the identity; a quarter turn is a rot90; a shift of 2/W moves one pixel."""
  image = jnp.arange(16.0).reshape(1, 4, 4, 1)
  zero = warp.rigid_warp(image, jnp.zeros(1), jnp.zeros((1, 2)))
  np.testing.assert_allclose(zero, image, atol=1e-5)
  quarter = warp.rigid_warp(image, jnp.float32([np.pi / 2]), jnp.zeros((1, 2)))
  np.testing.assert_allclose(quarter[0, ..., 0], np.rot90(np.arange(16.0).reshape(4, 4)),
                             atol=1e-4)
  moved = warp.rigid_warp(image, jnp.zeros(1), jnp.float32([[0.5, 0.0]]))
  np.testing.assert_allclose(moved[0, :, 1:, 0], image[0, :, :3, 0], atol=1e-5)
  np.testing.assert_allclose(moved[0, :, 0, 0], image[0, :, 0, 0], atol=1e-5)  # the edge repeats


def test_pose_gradient_is_finite_and_matches_differences():
  """Training moves pose through the sampler: d(output)/d(angle, shift) exists and is right."""
  image = jnp.float32(np.random.default_rng(1).normal(size=(1, 8, 8, 1)))
  loss = lambda pose: jnp.sum(jnp.sin(warp.rigid_warp(image, pose[:1], pose[None, 1:])))
  pose = jnp.float32([0.3, 0.11, -0.07])
  grad = jax.grad(loss)(pose)
  eps = 1e-3
  for k in range(3):
    step = jnp.zeros(3).at[k].set(eps)
    numeric = (loss(pose + step) - loss(pose - step)) / (2 * eps)
    np.testing.assert_allclose(grad[k], numeric, rtol=0.05, atol=1e-2)


def test_model_with_warp_starts_as_the_plain_decoder_and_poses_from_style():
  config = configs.base_config().model
  config.update(family="conv", hidden=32, content_dim=3, style_dim=2)
  plain = models.build_model(config, (32, 32, 1))
  config.decoder_warp = "rigid"
  posed = models.build_model(config, (32, 32, 1))
  x = jnp.float32(np.random.default_rng(0).uniform(size=(2, 32, 32, 1)))
  params = posed.init(jax.random.key(0), x)["params"]
  assert params["pose_warp"]["pose"]["kernel"].shape == (2, 3)
  content, style = jnp.ones((2, 3)), jnp.float32([[1.0, 0.0], [0.0, 1.0]])
  plain_params = {k: v for k, v in params.items() if k != "pose_warp"}
  canvas = plain.apply({"params": plain_params}, content, style, method="decode").loc
  start = posed.apply({"params": params}, content, style, method="decode").loc
  np.testing.assert_allclose(start, canvas, atol=1e-5)
  params["pose_warp"]["pose"]["kernel"] = jnp.float32([[np.pi / 2, 0, 0], [0, 0, 0]])
  turned = posed.apply({"params": params}, content, style, method="decode").loc
  np.testing.assert_allclose(turned[0, ..., 0], np.rot90(canvas[0, ..., 0]), atol=1e-4)
  np.testing.assert_allclose(turned[1], canvas[1], atol=1e-5)  # style 1 has no pose


def test_dedicated_pose_dims_move_the_drawing_and_nothing_else():
  """With 'rigid_dedicated' the first three style dimensions are the pose (angle pi s_0,
  shift s_1:3 / 2) and the decoder never sees them: changing them only warps the canvas."""
  config = configs.base_config().model
  config.update(family="mlp", hidden=16, content_dim=2, style_dim=5, decoder_warp="rigid_dedicated")
  model = models.build_model(config, (8, 8, 1))
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  assert "pose_warp" not in params and params["decoder"]["Dense_0"]["kernel"].shape == (4, 16)
  rng = np.random.default_rng(2)
  content, rest = jnp.float32(rng.normal(size=(3, 2))), jnp.float32(rng.normal(size=(3, 2)))
  pose = jnp.float32(rng.normal(size=(3, 3)))
  decode = lambda style: model.apply({"params": params}, content, style, method="decode").loc
  canvas = decode(jnp.concatenate([jnp.zeros((3, 3)), rest], axis=1))
  posed = decode(jnp.concatenate([pose, rest], axis=1))
  want = [reference.rigid_warp(np.asarray(canvas[i]), np.pi * pose[i, 0], np.asarray(pose[i, 1:]) / 2)
          for i in range(3)]
  np.testing.assert_allclose(posed, np.stack(want), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("setting, shape, style_dim, message", [
    ("affine", (32, 32, 1), 6, "decoder_warp"),
    ("rigid", (10,), 6, "warps images"),
    ("rigid_dedicated", (8, 8, 1), 2, "style_dim=2 is fewer"),
])
def test_bad_warp_config_is_explained(setting, shape, style_dim, message):
  config = configs.base_config().model
  config.update(decoder_warp=setting, style_dim=style_dim)
  with pytest.raises(ValueError, match=message):
    models.build_model(config, shape)
