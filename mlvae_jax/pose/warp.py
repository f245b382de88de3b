"""A rigid pose (rotation and shift) read from the style code, applied to the decoder's output.

The decoder draws on a canvas; `PoseWarp` resamples that canvas so the drawing appears turned
by an angle and moved by a shift, both linear in the style code. It is the spatial
transformer (Jaderberg et al. 2015) used as a decoder, as in spatial-VAE (Bepler et al. 2019):
content only has to say *what* to draw in one pose, style says *where and at which angle*, so
an object's identity need not be learnt separately at every angle (docs/model.md, section 1).
Two ways to read the pose: `rigid` maps the whole style code linearly to it (the decoder
still sees all of style, so it may draw pose itself and leave the warp idle); with
`rigid_dedicated` the first three style dimensions are the pose (angle pi s_0, shift
(s_1, s_2) / 2, so one sd of the N(0, 1) prior is a half turn and a quarter of the
canvas) and the decoder does not see them, as spatial-VAE's generator does not.

Coordinates are normalised to [-1, 1] over pixel centres' extent (x along width, y along
height). Output pixel p shows the canvas at R(angle) (p - shift): the canvas' centre moves to
`shift` and turns about it. Samples are bilinear; beyond the canvas its edge pixels repeat, so
a background drawn at the edge stays background whatever the likelihood's parametrisation.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

WARPS = ("none", "rigid", "rigid_dedicated")  # model.decoder_warp
POSE_DIMS = 3  # angle, shift x, shift y
_DEDICATED_SCALE = (jnp.pi, 0.5, 0.5)


def dedicated_pose(style: jax.Array) -> jax.Array:
  """(angle, shift x, shift y) [N, 3] that `rigid_dedicated` reads from style [N, Ds]."""
  return style[:, :POSE_DIMS] * jnp.asarray(_DEDICATED_SCALE, style.dtype)


def dedicated_style(angle: jax.Array, shift: jax.Array) -> jax.Array:
  """The first POSE_DIMS style values [N, 3] that `dedicated_pose` reads as (angle [N], shift
  [N, 2]): its inverse."""
  pose = jnp.concatenate([angle[:, None], shift], axis=-1)
  return pose / jnp.asarray(_DEDICATED_SCALE, pose.dtype)


def dedicated_angle_posterior(style_mu: jax.Array, style_logvar: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Mean and variance [N] of the `rigid_dedicated` angle (radians) under q(S | x)."""
  scale = _DEDICATED_SCALE[0]
  return scale * style_mu[:, 0], scale**2 * jnp.exp(style_logvar[:, 0])


def pixel_centres(size: int) -> jax.Array:
  """The [-1, 1] coordinates of `size` pixel centres along one axis (the warp's convention)."""
  return (jnp.arange(size) + 0.5) / size * 2 - 1


def rigid_warp(images: jax.Array, angle: jax.Array, shift: jax.Array,
               centre: jax.Array | None = None) -> jax.Array:
  """`images` [N, H, W, C] turned by `angle` [N] (radians) and moved by `shift` [N, 2] (x, y):
  output pixel p shows the image at centre + R(angle) (p - shift), `centre` [N, 2] (default
  the origin). `shift = centre = c` turns each image about its point c in place."""
  height, width = images.shape[1:3]
  if centre is None:
    centre = jnp.zeros_like(shift)
  grid_y, grid_x = jnp.meshgrid(pixel_centres(height), pixel_centres(width), indexing="ij")

  def one(image, a, t, c):
    dx, dy = grid_x - t[0], grid_y - t[1]
    cos, sin = jnp.cos(a), jnp.sin(a)
    source_x, source_y = c[0] + cos * dx - sin * dy, c[1] + sin * dx + cos * dy
    rows = (source_y + 1) / 2 * height - 0.5
    cols = (source_x + 1) / 2 * width - 0.5
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, [rows, cols], order=1, mode="nearest")
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(images, angle, shift, centre)


class PoseWarp(nn.Module):
  """Reads (angle, shift x, shift y) from the style code and warps the canvas by it.

  Learned (`dedicated=False`), the map starts at zero, so an untrained model's warp is the
  identity and the decoder alone draws, as without a warp. Dedicated, the pose is the first
  POSE_DIMS style dimensions, scaled, and `drawn_style` hides them from the decoder."""

  dedicated: bool = False

  def drawn_style(self, style: jax.Array) -> jax.Array:
    """The style dimensions the decoder sees."""
    return style[:, POSE_DIMS:] if self.dedicated else style

  @nn.compact
  def __call__(self, canvas: jax.Array, style: jax.Array) -> jax.Array:
    if self.dedicated:
      pose = dedicated_pose(style)
    else:
      pose = nn.Dense(POSE_DIMS, kernel_init=nn.initializers.zeros, name="pose")(style)
    return rigid_warp(canvas, pose[:, 0], pose[:, 1:])
