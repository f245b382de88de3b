"""Every term of the objective's table, as the loss calls it (terms.TERMS), against its float64
reference: the value, and the gradient against float64 central differences of the reference.

A forward check cannot see a `stop_gradient`, present or missing. The HSIC terms hold their
kernels' standardising scales and base bandwidth constant in the gradient (the group content
kernel entirely), so their references take those constants from the unperturbed point: the
finite differences then vary what the term differentiates and nothing else, and a missing
stop_gradient (or an extra one) moves the gradient far past the tolerance. The batch is
test_gradients.py's: groups of 3, 2 and 3 members, an empty slot, padding rows.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlvae_jax import configs, models
from mlvae_jax.objectives import terms
from mlvae_jax.pose import equivariance
from tests import reference
from tests.objectives.test_contrast import reference_contrast
from tests.objectives.test_gradients import (ATOL, GROUP_IDS, MASK, N, NUM_GROUPS, RTOL,
                                             assert_gradients_close, central_differences)
from tests.objectives.test_independence import (kernel_constants, reference_content_kernel_hsic,
                                                reference_hsic, reference_within_group_hsic,
                                                within_group_residual)
from tests.pose.test_equivariance import reference_equivariance

CONTENT_DIM, STYLE_DIM = 3, 5  # with the moment pose: 3 pose dimensions and 2 learnt ones
POSE_DIMS = 3
HARMONICS = (1, 2)


def _posterior_arrays(seed: int) -> dict[str, np.ndarray]:
  """Content and style means and log-variances; padding rows hold values unlike any real row."""
  rng = np.random.default_rng(seed)
  arrays = {"content_mu": rng.normal(size=(N, CONTENT_DIM)),
            "content_logvar": rng.uniform(-2, 2, size=(N, CONTENT_DIM)),
            "style_mu": rng.normal(size=(N, STYLE_DIM)),
            "style_logvar": rng.uniform(-2, 2, size=(N, STYLE_DIM))}
  for array in arrays.values():
    array[~MASK] = 7.0
  return arrays


def _term_value_and_grads(fn, arrays, objective_config, pose_harmonics=()):
  """The term's value and its float64 gradient with respect to every posterior array."""
  with jax.enable_x64(True):
    batch = {"group_ids": jnp.asarray(GROUP_IDS), "mask": jnp.asarray(MASK)}

    def term(posterior_arrays):
      inputs = terms.TermInputs(models.Posterior(**posterior_arrays), batch,
                                jnp.asarray(GROUP_IDS), NUM_GROUPS, pose_harmonics)
      return fn(inputs, objective_config)

    value, grads = jax.jit(jax.value_and_grad(term))(
        {k: jnp.asarray(v) for k, v in arrays.items()})
  return float(value), {k: np.asarray(v) for k, v in grads.items()}


def _learnt_style(style_mu, pose_harmonics):
  return style_mu[:, POSE_DIMS if pose_harmonics else 0:]


def reference_pose_features(pose_style: np.ndarray) -> np.ndarray:
  """(shift, cos k a, sin k a) of the dedicated pose (a = pi s_0, shift = s_1:3 / 2), row by row."""
  return np.array([[0.5 * sx, 0.5 * sy] + [np.cos(k * np.pi * a) for k in HARMONICS]
                   + [np.sin(k * np.pi * a) for k in HARMONICS] for a, sx, sy in pose_style])


def _group_content_rows(content_mu, content_logvar) -> np.ndarray:
  """Each group slot's product content mean (reference), the padding slot far away."""
  rows = np.full((NUM_GROUPS + 1, CONTENT_DIM), 1e4)
  for slot in np.unique(GROUP_IDS[MASK]):
    members = (GROUP_IDS == slot) & MASK
    rows[slot] = reference.product_of_normals(content_mu[members], content_logvar[members])[0]
  return rows


@pytest.mark.parametrize("pose_harmonics", [(), HARMONICS])
@pytest.mark.parametrize("group_kernel", ["membership", "content"])
def test_style_hsic(group_kernel, pose_harmonics):
  arrays = _posterior_arrays(1)
  config = configs.base_config().objective
  config.style_hsic_group_kernel = group_kernel
  base_style = _learnt_style(arrays["style_mu"], pose_harmonics)
  held = kernel_constants(base_style[MASK])
  base_group_content = _group_content_rows(arrays["content_mu"], arrays["content_logvar"])

  def reference_term(held, **a):
    style = _learnt_style(a["style_mu"], pose_harmonics)
    if group_kernel == "membership":
      return reference_hsic(style, GROUP_IDS, MASK, held)
    # the group content kernel is held constant: the base point's, whatever the content now
    return reference_content_kernel_hsic(style, base_group_content, GROUP_IDS, MASK, held)

  value, grads = _term_value_and_grads(terms.style_hsic, arrays, config, pose_harmonics)
  np.testing.assert_allclose(value, reference_term(None, **arrays), rtol=1e-10)
  assert_gradients_close(grads, central_differences(lambda **a: reference_term(held, **a), arrays))
  assert not grads["style_mu"][:, :POSE_DIMS if pose_harmonics else 0].any()
  _assert_held_constants_matter(grads, arrays, lambda **a: reference_term(None, **a))


@pytest.mark.parametrize("pose_harmonics, with_pose", [((), False), (HARMONICS, False),
                                                       (HARMONICS, True)])
def test_content_style_hsic(pose_harmonics, with_pose):
  arrays = _posterior_arrays(2)
  config = configs.base_config().objective
  config.content_style_hsic_pose = with_pose

  def parts(a):
    pose = reference_pose_features(a["style_mu"][:, :POSE_DIMS]) if with_pose else None
    return _learnt_style(a["style_mu"], pose_harmonics), pose

  style, pose = parts(arrays)
  held = (kernel_constants(within_group_residual(arrays["content_mu"], GROUP_IDS, MASK)),
          kernel_constants(style[MASK]), None if pose is None else kernel_constants(pose[MASK]))

  def reference_term(held, **a):
    style, pose = parts(a)
    return reference_within_group_hsic(a["content_mu"], style, GROUP_IDS, MASK, pose, held)

  value, grads = _term_value_and_grads(terms.content_style_hsic, arrays, config, pose_harmonics)
  np.testing.assert_allclose(value, reference_term((None, None, None), **arrays), rtol=1e-10)
  assert_gradients_close(grads, central_differences(lambda **a: reference_term(held, **a), arrays))
  # the moment pose's dimensions: learnt style without it, left out, or through the pose kernel
  assert grads["style_mu"][:, :POSE_DIMS].any() == (with_pose or not pose_harmonics)
  _assert_held_constants_matter(grads, arrays, lambda **a: reference_term((None,) * 3, **a))


def _assert_held_constants_matter(grads, arrays, unheld_reference) -> None:
  """The gradient of the term with nothing held constant differs from the term's by a hundred
  times the tolerance somewhere: the check above would catch a stop_gradient removed."""
  unheld = central_differences(unheld_reference, arrays)
  assert any(np.any(np.abs(grads[k] - unheld[k]) > 100 * (ATOL + RTOL * np.abs(unheld[k])))
             for k in grads)


def test_content_contrast():
  arrays = _posterior_arrays(3)
  config = configs.base_config().objective
  config.content_contrast_temperature = 0.7

  def reference_term(**a):
    return reference_contrast(a["content_mu"], GROUP_IDS, MASK, 0.7)

  value, grads = _term_value_and_grads(terms.content_contrast, arrays, config)
  np.testing.assert_allclose(value, reference_term(**arrays), rtol=1e-10)
  assert_gradients_close(grads, central_differences(reference_term, arrays))


def test_angle_equivariance():
  """Through a linear float64 encoder of 8x8 images: the gradient with respect to its weights
  reaches both the input's and the turned input's angle posterior. The turned images are data
  to the reference (the turn moves no parameter)."""
  rng = np.random.default_rng(4)
  images = rng.uniform(size=(N, 8, 8, 1))
  weights = {"w": rng.normal(size=(64, 2)) * 0.1, "b": np.array([0.2, -1.0])}
  config = configs.base_config().objective
  config.update(angle_equivariance_symmetry=2, angle_equivariance_max_turn=1.0)
  key = jax.random.key(5)
  batch_mask = jnp.asarray(MASK)

  def encode_rows(w, b, x, xp):
    out = xp.reshape(x, (x.shape[0], -1)) @ w + b
    zeros = xp.zeros((x.shape[0], 1))
    return models.Posterior(zeros, zeros, out[:, :1], out[:, 1:])

  with jax.enable_x64(True):
    def term(params):
      encode = lambda x: encode_rows(params["w"], params["b"], x, jnp)  # noqa: E731
      x = jnp.asarray(images)
      inputs = terms.TermInputs(encode(x), {"x": x, "mask": batch_mask}, jnp.asarray(GROUP_IDS),
                                NUM_GROUPS, encode=encode, encoder_input=x, rng=key)
      return terms.angle_equivariance(inputs, config)

    value, grads = jax.jit(jax.value_and_grad(term))({k: jnp.asarray(v) for k, v in weights.items()})
    inputs = terms.TermInputs(None, {}, None, 0, encoder_input=jnp.asarray(images), rng=key)
    turn = np.asarray(terms.equivariance_turns(inputs, config))
    turned_images = np.asarray(equivariance.turn_about_centroids(jnp.asarray(images),
                                                                 jnp.asarray(turn)))

  def reference_term(w, b):
    angles = []
    for x in (images, turned_images):
      posterior = encode_rows(w, b, x, np)  # the dedicated angle is pi s_0
      angles += [np.pi * posterior.style_mu[:, 0], np.pi**2 * np.exp(posterior.style_logvar[:, 0])]
    return reference_equivariance(*angles, turn, MASK, 2)

  np.testing.assert_allclose(float(value), reference_term(**weights), rtol=1e-10)
  assert_gradients_close({k: np.asarray(v) for k, v in grads.items()},
                         central_differences(reference_term, weights))


# Where each row of the table has its gradient checked against float64 central differences.
GRADIENT_TESTS = {
    "style_hsic": "test_term_gradients.test_style_hsic",
    "content_style_hsic": "test_term_gradients.test_content_style_hsic",
    "content_contrast": "test_term_gradients.test_content_contrast",
    "angle_equivariance": "test_term_gradients.test_angle_equivariance",
    "reverse_cycle": "test_reverse_cycle.test_value_and_gradients_match_the_float64_reference",
}


def test_every_term_of_the_table_has_a_gradient_test():
  missing = {term.metric for term in terms.TERMS} - set(GRADIENT_TESTS)
  assert not missing, f"terms {sorted(missing)} need a gradient test listed in GRADIENT_TESTS"
  for where in GRADIENT_TESTS.values():
    module, name = where.split(".")
    assert callable(getattr(importlib.import_module(f"tests.objectives.{module}"), name)), where
