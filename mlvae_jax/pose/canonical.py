"""A pose read from the image itself, equivariant by construction: the object's centre and an
angle that turns exactly as the image turns.

Why: the dedicated pose warp (`mlvae_jax/pose/warp.py`) turns the decoder's canvas by an angle in the
style code, but an encoder never learns that angle on grouped_shapes (docs/shapes/README.md):
a blob canvas gives the angle no gradient, an unknown angle makes a blob the best canvas, and
for data whose rotations are all equally likely no continuous learned angle can follow turns
(`mlvae_jax/pose/equivariance.py`). Canonicalisation (Kaba et al., ICML 2023, "Equivariance with
learned canonicalization functions") removes the trap: a function h with h(turn(x, d)) =
h(x) + d gives the pose, the network sees x brought back to that pose (the same image for
every turn of one object), and the pose is handed to whatever needs it.

Here h is classical moment normalisation (Hu 1962; Flusser, Suk and Zitova, "2D and 3D Image
Analysis by Moments", 2016, ch. 3), with no parameters: about the intensity centroid c, the
complex moments

    z_k = sum_p x(p) |p - c|^(m_k - k) (p - c)^k / sum_p x(p) |p - c|^(m_k),

(p - c as x + iy in the warp's coordinates, m_k = max(k, 3): the first moment about the
centroid is zero, so k = 1 uses the third-order c_21), one per harmonic k, pick up the factor
exp(-i k d) when the image turns by d about c. The angle is the argmax over a of the score
sum_k Re(z_k exp(i k a)), which therefore moves by exactly d: an object with k-fold symmetry
has only z_k (and multiples) non-zero, and the argmax lands on one of its k equivalent poses,
all of which show the same image. The score is evaluated on a grid and refined by a parabola
through the peak, so equivariance holds to a small fraction of a grid step.

What the argmax does not do: pick the same pose for every member of a mirror-symmetric shape
whose strongest harmonic ties two peaks (grouped_shapes' heart: it splits between two poses
of it, docs/shapes/README.md); `mirror_axis_angles` (model.canonical_angle='mirror_axis') picks
the pose on the mirror axis instead. Neither reads more than one object on a dark background:
clutter or a lit background moves the centroid and the moments.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from mlvae_jax.pose import equivariance, warp

_GRID = 720  # candidate angles for the argmax (half a degree apart)
# The log-variance of the pose dimensions' posterior (style units): the pose is a function of
# x, so q is nearly a point mass (sd e^-6: 0.008 rad of angle, 0.02 pixel of shift at 32x32).
# Left to the encoder, the angle's variance grows to the prior's, because a round canvas gives
# it no gradient, and an angle drawn with sd pi makes a round canvas the best one: the blob
# trap again (docs/shapes/README.md). Its KL is then a constant 5.5 nats a dimension plus
# half the squared mean.
POSE_LOGVAR = -12.0


def parse_harmonics(setting: str) -> tuple[int, ...]:
  """`model.canonical_harmonics` ('1,2,3,4') as a tuple of distinct positive ints."""
  try:
    harmonics = tuple(int(part) for part in str(setting).split(","))
  except ValueError:
    harmonics = ()
  if not harmonics or min(harmonics) < 1 or len(set(harmonics)) != len(harmonics):
    raise ValueError(f"config.model.canonical_harmonics={setting!r} must list distinct positive "
                     "harmonic orders separated by commas, e.g. '1,2,3,4'")
  return harmonics


def harmonic_moments(images: jax.Array, centres: jax.Array, harmonics: Sequence[int]
                     ) -> jax.Array:
  """[N, K] normalised complex moments z_k about `centres` [N, 2] (module docstring); an image
  without positive values has moments 0."""
  height, width = images.shape[1:3]
  weights = jnp.sum(jnp.maximum(images, 0.0), axis=-1)  # [N, H, W]
  y, x = warp.pixel_centres(height), warp.pixel_centres(width)
  offset = (x[None, None, :] - centres[:, 0, None, None]) + 1j * (
      y[None, :, None] - centres[:, 1, None, None])
  radius = jnp.abs(offset)
  moments = []
  for k in harmonics:
    power = max(k, 3)
    total = jnp.sum(weights * radius**power, axis=(1, 2))
    value = jnp.sum(weights * radius**(power - k) * offset**k, axis=(1, 2))
    moments.append(jnp.where(total > 0, value / jnp.where(total > 0, total, 1.0), 0.0))
  return jnp.stack(moments, axis=-1)


def canonical_angles(moments: jax.Array, harmonics: Sequence[int]) -> jax.Array:
  """[N] angles in [-pi, pi) maximising sum_k Re(z_k exp(i k a)) for `moments` [N, K]."""
  grid = jnp.linspace(-jnp.pi, jnp.pi, _GRID, endpoint=False)
  orders = jnp.asarray(harmonics, jnp.float32)
  phases = jnp.exp(1j * orders[:, None] * grid[None, :])  # [K, G]
  score = jnp.real(moments @ phases)  # [N, G]
  best = jnp.argmax(score, axis=-1)
  rows = jnp.arange(score.shape[0])
  left, centre, right = (score[rows, (best - 1) % _GRID], score[rows, best],
                         score[rows, (best + 1) % _GRID])
  curvature = left - 2 * centre + right
  vertex = jnp.where(curvature < 0, 0.5 * (left - right) / jnp.where(curvature < 0, curvature,
                                                                      -1.0), 0.0)
  angle = grid[best] + vertex * (2 * jnp.pi / _GRID)
  return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


def mirror_axis_angles(moments: jax.Array, harmonics: Sequence[int]) -> jax.Array:
  """[N] angles in [-pi, pi): of the k poses that the dominant harmonic k (largest |z_k|)
  allows, the one where the other harmonics are most nearly real, sum_j |Re(z_j e^{i j a})|;
  for an even k, of that pose and the one half a turn away (which score alike, the odd
  harmonics' parts only changing sign), the one with the larger sum_j Re(z_j e^{i j a}).

  A mirror-symmetric object's z_j e^{i j a} are all real on its mirror axis, so the sum
  peaks there; `canonical_angles`' argmax can instead land on a pair of peaks placed
  symmetrically off the axis, and then splits between them (grouped_shapes' heart). Exactly
  equivariant (the candidates and their scores turn with the image) and no grid."""
  orders = jnp.asarray(harmonics, jnp.float32)
  dominant = jnp.argmax(jnp.abs(moments), axis=-1)  # [N]
  rows = jnp.arange(moments.shape[0])
  order = orders[dominant]  # [N]
  steps = jnp.arange(max(harmonics), dtype=jnp.float32)  # [J] candidate indices
  candidates = (-jnp.angle(moments[rows, dominant])[:, None] + 2 * jnp.pi * steps[None, :]
                ) / order[:, None]  # [N, J]
  turns = jnp.exp(1j * orders[None, None, :] * candidates[:, :, None])  # [N, J, K]
  parts = jnp.real(moments[:, None, :] * turns)
  others = (jnp.arange(len(harmonics))[None, :] != dominant[:, None])[:, None, :]  # [N, 1, K]
  score = jnp.where(steps[None, :] < order[:, None], jnp.sum(jnp.abs(parts) * others, axis=-1),
                    -jnp.inf)
  signed = jnp.sum(parts * others, axis=-1)  # [N, J]
  best = jnp.argmax(score, axis=-1)
  order_int = order.astype(jnp.int32)
  opposite = (best + order_int // 2) % order_int
  flip = (order_int % 2 == 0) & (signed[rows, opposite] > signed[rows, best])
  angle = candidates[rows, jnp.where(flip, opposite, best)]
  return jnp.mod(angle + jnp.pi, 2 * jnp.pi) - jnp.pi


ANGLE_RULES = {"argmax": canonical_angles, "mirror_axis": mirror_axis_angles}  # model.canonical_angle


def canonical_pose(images: jax.Array, harmonics: Sequence[int], rule: str = "argmax"
                   ) -> tuple[jax.Array, jax.Array]:
  """(angle [N], centre [N, 2]) of each image [N, H, W, C] by `rule` (ANGLE_RULES): turning an
  image by d about its centre adds d to its angle (modulo the object's symmetry)."""
  centres = equivariance.intensity_centroids(images)
  moments = harmonic_moments(images, centres, harmonics)
  return ANGLE_RULES[rule](moments, harmonics), centres


def to_canonical_frame(images: jax.Array, angle: jax.Array, centres: jax.Array) -> jax.Array:
  """Each image moved so its `centres` point is the canvas centre and turned back by `angle`:
  what the dedicated warp with pose (angle, centre) turns and moves back into the image."""
  return warp.rigid_warp(images, -angle, jnp.zeros_like(centres), centre=centres)


def pose_features(pose_style: jax.Array, harmonics: Sequence[int]) -> jax.Array:
  """[N, 2 + 2K] features of the moment pose held in the first `warp.POSE_DIMS` style means
  [N, 3]: the shift, and cos / sin of k times the angle for each harmonic k. A k-fold
  symmetric object's angle is known only modulo 2 pi / k, and its k-th harmonic features are
  the same for every equivalent pose: a kernel on them sees a square's turn, which a kernel
  on the raw angle (one of four arbitrary branches) blurs."""
  pose = warp.dedicated_pose(pose_style)
  orders = jnp.asarray(harmonics, pose.dtype)
  turns = orders[None, :] * pose[:, :1]
  return jnp.concatenate([pose[:, 1:], jnp.cos(turns), jnp.sin(turns)], axis=-1)
