"""Probes: how much of a label a latent code carries, measured on held-out data.

A linear probe sees only linearly decodable information; a code can hide its group
non-linearly (clusters that no hyperplane separates), so the k-nearest-neighbours and small
MLP probes are reported beside it. All three standardise the code on the training features.
"""

from __future__ import annotations


import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PROBES = ("linear", "knn", "mlp")


def _classifier(kind: str, seed: int, knn_neighbours: int, mlp_hidden: int):
  if kind == "linear":
    return LogisticRegression(max_iter=2000)
  if kind == "knn":
    return KNeighborsClassifier(n_neighbors=knn_neighbours)
  if kind == "mlp":
    return MLPClassifier(hidden_layer_sizes=(mlp_hidden,), early_stopping=True, max_iter=300,
                         random_state=seed)
  raise ValueError(f"unknown probe {kind!r}; choose one of {PROBES}")


def probe_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray,
    test_features: np.ndarray, test_labels: np.ndarray,
    kind: str = "linear", *, seed: int = 0, knn_neighbours: int = 5, mlp_hidden: int = 256,
) -> float:
  """Test accuracy of a `kind` probe fitted on standardised training features."""
  if len(np.unique(train_labels)) < 2:
    return 1.0
  probe = make_pipeline(StandardScaler(), _classifier(kind, seed, knn_neighbours, mlp_hidden))
  probe.fit(np.asarray(train_features, np.float64), train_labels)
  return float(probe.score(np.asarray(test_features, np.float64), test_labels))


def probe_all(
    train_features: np.ndarray, train_labels: np.ndarray,
    test_features: np.ndarray, test_labels: np.ndarray,
    kinds: tuple[str, ...] = PROBES, **settings,
) -> dict[str, float]:
  """`{kind: accuracy}` for every probe in `kinds`."""
  return {kind: probe_accuracy(train_features, train_labels, test_features, test_labels, kind,
                               **settings) for kind in kinds}


def majority_rate(labels: np.ndarray) -> float:
  """Accuracy of always guessing the most frequent label: the bar a probe must clear."""
  _, counts = np.unique(labels, return_counts=True)
  return float(counts.max() / counts.sum())
