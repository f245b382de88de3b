"""Swap consistency: does a decoded (content of a, style of b) image show a's group?

For pairs of observations from different groups, the content code of `a` and the style code
of `b` are decoded together and a pixel classifier (fitted on real training images) names
what the result shows. A model whose content carries the group scores `content` near the
classifier's own accuracy; one whose style carries it drifts to `style`; a decoder that
mixes both, or draws nothing recognisable, lands in `neither`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

EncodeFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # x -> (content_mu, style_mu)
DecodeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (content, style) -> images
PredictFn = Callable[[np.ndarray], np.ndarray]  # images -> labels


def different_label_pairs(labels: np.ndarray, num_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Indices (a, b) of `num_pairs` random pairs whose labels differ."""
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 2:
    raise ValueError("swap consistency needs observations of at least two different labels")
  a = rng.integers(0, len(labels), num_pairs)
  b = rng.integers(0, len(labels), num_pairs)
  same = labels[a] == labels[b]
  while np.any(same):  # redraw b where it shares a's label
    b[same] = rng.integers(0, len(labels), int(same.sum()))
    same = labels[a] == labels[b]
  return a, b


def swap_fractions(predicted: np.ndarray, content_labels: np.ndarray, style_labels: np.ndarray) -> dict[str, float]:
  """Fractions of swaps read as the content source's label, the style source's, or neither."""
  content = predicted == content_labels
  style = predicted == style_labels
  return {"content": float(np.mean(content)), "style": float(np.mean(style)),
          "neither": float(np.mean(~content & ~style))}


def swap_consistency(
    encode: EncodeFn, decode: DecodeFn, predict: PredictFn, x: np.ndarray, labels: np.ndarray,
    num_pairs: int, seed: int,
) -> dict[str, float]:
  """Decodes content of a with style of b over random pairs with labels[a] != labels[b]."""
  a, b = different_label_pairs(labels, num_pairs, np.random.default_rng(seed))
  content, _ = encode(x[a])
  _, style = encode(x[b])
  return swap_fractions(predict(decode(content, style)), labels[a], labels[b])
