"""A signal for the pose warp's angle that does not come through the canvas: turn the input,
and the angle read from it must turn with it.

With `model.decoder_warp='rigid_dedicated'` the decoder's canvas is turned by pi s_0, s_0 the
first style dimension (`mlvae_jax/pose/warp.py`). On grouped_shapes that angle stays at the prior
and the canvas becomes a round blob (docs/shapes/README.md): a blob gives the angle no
gradient, and an angle the encoder does not pin down makes a blob the best canvas. The data
say what the angle must do without any label: an image turned by a known delta about its own
centre shows the same object at angle + delta. This term asks exactly that of the encoder, as
the equivariant autoencoders of Winter et al. (NeurIPS 2022) and the rotation-inferring
spatial-VAE (Bepler et al., NeurIPS 2019) do:

    L = mean over valid rows i of (1 - cos(K (a'_i - a_i - delta_i))) / K^2 + (v_i + v'_i) / 2,

a_i and v_i the mean and variance of the warp's angle pi s_0 under q(S | x_i), a'_i and v'_i
the same under q(S | turn(x_i, delta_i)), delta_i uniform in [-max_turn, max_turn], K the
largest rotational symmetry order the data hold (a square, 4, looks the same turned by pi / 2,
so its angle is only defined modulo 2 pi / K and the loss must not charge that ambiguity; K = 1
for no symmetry). For small errors L is E[(A' - A - delta)^2] / 2 over independent draws A, A'
of the two angles: the variance part charges the angle's posterior spread, so the encoder pins
the angle down before the decoder has any use for it, which is what the blob trap needs (on
draws themselves the periodic loss would be flat while the spread is wide). It is not part of
the ELBO: the loss adds it with its weight (docs/model.md, section 1).

The turn is about the image's intensity centroid (a single object's centre), with the warp's
bilinear sampler, so the object stays in place and only its angle changes.

What it does not do (docs/shapes/README.md): make an ordinary encoder's angle follow turns.
When turning leaves the data's distribution unchanged, E_x[a(turn(x, delta)) - a(x)] = 0 for
any continuous angle a, so only an angle with a cut (a sawtooth, which the periodic loss
forgives) can follow turns, and training has to grow that cut from nothing: the term pins the
angle at once and the following creeps. `model.pose_from='moments'` (canonical.py) gives an
angle equivariant by construction instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mlvae_jax.pose import warp


def intensity_centroids(images: jax.Array) -> jax.Array:
  """[N, 2] (x, y) centre of mass of each image's positive values, in the warp's [-1, 1]
  coordinates; an image without positive values has its centre at the origin."""
  height, width = images.shape[1:3]
  weights = jnp.sum(jnp.maximum(images, 0.0), axis=-1)  # [N, H, W]
  y, x = warp.pixel_centres(height), warp.pixel_centres(width)
  total = jnp.sum(weights, axis=(1, 2))
  safe_total = jnp.where(total > 0, total, 1.0)
  centre_x = jnp.sum(weights * x[None, None, :], axis=(1, 2)) / safe_total
  centre_y = jnp.sum(weights * y[None, :, None], axis=(1, 2)) / safe_total
  return jnp.stack([centre_x, centre_y], axis=-1)


def turn_about_centroids(images: jax.Array, turn: jax.Array) -> jax.Array:
  """`images` [N, H, W, C] each turned by `turn` [N] radians about its intensity centroid, in
  the sense the decoder warp's angle turns its canvas (so the pose angle grows by `turn`)."""
  centres = intensity_centroids(images)
  return warp.rigid_warp(images, turn, centres, centre=centres)


def angle_equivariance(angle: jax.Array, angle_var: jax.Array, turned_angle: jax.Array,
                       turned_var: jax.Array, turn: jax.Array, mask: jax.Array,
                       symmetry: int) -> jax.Array:
  """The mean over valid rows of (1 - cos(K (turned_angle - angle - turn))) / K^2 plus half
  the two variances; 0 when no row is valid. Angles and turns [N] in radians."""
  error = turned_angle - angle - turn
  per_row = (1.0 - jnp.cos(symmetry * error)) / symmetry**2 + 0.5 * (angle_var + turned_var)
  valid = jnp.sum(mask)
  return jnp.sum(jnp.where(mask, per_row, 0.0)) / jnp.maximum(valid, 1).astype(per_row.dtype)
