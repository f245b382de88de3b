"""Independent float64 NumPy reference of ML-VAE's evidence accumulation and group ELBO.

Written from the paper's equations with explicit Python loops over groups, sharing no code
with the library, so a bug in the segment-op formulation cannot hide in both.
"""

from __future__ import annotations

import numpy as np


def random_ragged_ids(rng: np.random.Generator, n: int, g: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted ids with random (possibly empty) group sizes and trailing padding rows (id g)."""
  cuts = np.sort(rng.integers(0, n + 1, size=g))
  sizes = np.diff(np.concatenate([[0], cuts]))
  ids = np.repeat(np.arange(g), sizes)
  ids = np.concatenate([ids, np.full(n - ids.size, g)]).astype(np.int32)
  return ids, ids < g


def product_of_normals(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Product of diagonal Normals of the rows of (mu, logvar): precisions add."""
  mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
  precision = np.exp(-logvar)
  total = precision.sum(axis=0)
  return (mu * precision).sum(axis=0) / total, -np.log(total)


def average_of_normals(mu: np.ndarray, logvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  mu, logvar = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
  return mu.mean(axis=0), np.log(np.exp(logvar).mean(axis=0))


def kl_to_standard_normal(mu: np.ndarray, logvar: np.ndarray) -> float:
  return float(0.5 * np.sum(np.exp(logvar) + mu**2 - 1.0 - logvar))


def kl_per_dim(mu_a, logvar_a, mu_b, logvar_b) -> np.ndarray:
  """KL(N(mu_a, e^logvar_a) || N(mu_b, e^logvar_b)) per dimension."""
  return 0.5 * (logvar_b - logvar_a + (np.exp(logvar_a) + (mu_a - mu_b) ** 2) / np.exp(logvar_b) - 1)


def adaptive_shared(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
  """[D] bool: the dimensions one group's members (rows) share under the adaptive rule
  (Locatello et al. 2020; objectives/adaptive.py): per dimension the largest symmetrised KL
  over member pairs, shared below the midpoint of its range (all when the range is empty)."""
  delta = np.zeros(mu.shape[1])
  for i in range(len(mu)):
    for j in range(i + 1, len(mu)):
      pair = 0.5 * (kl_per_dim(mu[i], logvar[i], mu[j], logvar[j])
                    + kl_per_dim(mu[j], logvar[j], mu[i], logvar[i]))
      delta = np.maximum(delta, pair)
  if delta.max() == delta.min():
    return np.ones(mu.shape[1], bool)
  return delta < 0.5 * (delta.max() + delta.min())


def bernoulli_log_prob(logits: np.ndarray, x: np.ndarray) -> float:
  return float(np.sum(x * logits - np.logaddexp(0.0, logits)))


def gaussian_log_prob(mean: np.ndarray, logvar: np.ndarray, x: np.ndarray) -> float:
  return float(np.sum(-0.5 * (np.log(2 * np.pi) + logvar + (x - mean) ** 2 / np.exp(logvar))))


def group_elbo(
    content_mu, content_logvar, style_mu, style_logvar, x, group_ids, mask, num_groups,
    decode, content_noise, style_noise, content_sample="group", variant="mlvae",
    single_member_rate=0.0, member_score=None, group_coin=None,
) -> dict[str, float]:
  """Mean over valid groups of each ELBO term, one group at a time, and bits per dimension
  (minus the batch's total ELBO over its valid observations' dimensions, in bits).

  `decode(c, s, x)` returns log p(x | c, s) for one observation (float64). A group whose coin
  is below `single_member_rate` takes its highest-scoring member's own posterior as q(C_G).
  The adaptive variants pool only the dimensions `adaptive_shared` finds; the others stay each
  member's own, with their KL counted per member.
  """
  combine = average_of_normals if variant in ("gvae", "ada_gvae") else product_of_normals
  adaptive = variant in ("ada_gvae", "ada_mlvae")
  recon, kl_s, kl_c, valid, observations = 0.0, 0.0, 0.0, 0, 0
  for g in range(num_groups):
    members = np.nonzero((group_ids == g) & mask)[0]
    if members.size == 0:
      continue
    valid += 1
    observations += members.size
    mu_g, logvar_g = combine(content_mu[members], content_logvar[members])
    if group_coin is not None and group_coin[g] < single_member_rate:
      chosen = members[np.argmax(member_score[members])]
      mu_g, logvar_g = content_mu[chosen], content_logvar[chosen]
    shared = (adaptive_shared(content_mu[members], content_logvar[members]) if adaptive
              else np.ones(len(mu_g), bool))
    kl_c += kl_to_standard_normal(mu_g[shared], logvar_g[shared])
    for i in members:
      mu_i = np.where(shared, mu_g, content_mu[i])
      logvar_i = np.where(shared, logvar_g, content_logvar[i])
      kl_c += kl_to_standard_normal(mu_i[~shared], logvar_i[~shared])
      eps_c = content_noise[g] if content_sample == "group" else content_noise[i]
      c = mu_i + np.exp(0.5 * logvar_i) * eps_c
      s = style_mu[i] + np.exp(0.5 * style_logvar[i]) * style_noise[i]
      recon += decode(c, s, x[i])
      kl_s += kl_to_standard_normal(style_mu[i], style_logvar[i])
  total_elbo = recon - kl_s - kl_c
  valid = max(valid, 1)
  terms = {"reconstruction": recon / valid, "kl_style": kl_s / valid, "kl_content": kl_c / valid}
  terms["elbo"] = terms["reconstruction"] - terms["kl_style"] - terms["kl_content"]
  dims = max(observations, 1) * int(np.prod(np.shape(x)[1:]))
  terms["bits_per_dim"] = -total_elbo / (dims * np.log(2.0))
  return terms


def rigid_warp(image: np.ndarray, angle: float, shift: tuple[float, float],
               centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
  """One [H, W, C] image resampled pixel by pixel: output pixel p reads the image at
  centre + R(angle) (p - shift) in [-1, 1] coordinates, bilinearly, the edge repeating."""
  image = np.asarray(image, np.float64)
  height, width = image.shape[:2]
  out = np.zeros_like(image)
  cos, sin = np.cos(angle), np.sin(angle)
  for i in range(height):
    for j in range(width):
      px = (j + 0.5) / width * 2 - 1 - shift[0]
      py = (i + 0.5) / height * 2 - 1 - shift[1]
      col = ((centre[0] + cos * px - sin * py) + 1) / 2 * width - 0.5
      row = ((centre[1] + sin * px + cos * py) + 1) / 2 * height - 0.5
      r0, c0 = int(np.floor(row)), int(np.floor(col))
      fr, fc = row - r0, col - c0
      for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
          r = min(max(r0 + dr, 0), height - 1)
          c = min(max(c0 + dc, 0), width - 1)
          out[i, j] += wr * wc * image[r, c]
  return out
