"""Linear probes: how much of a label a latent code carries, measured on held-out data."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def probe_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray,
    test_features: np.ndarray, test_labels: np.ndarray,
) -> float:
  """Test accuracy of a logistic regression fitted on standardised training features."""
  if len(np.unique(train_labels)) < 2:
    return 1.0
  scaler = StandardScaler().fit(train_features)
  classifier = LogisticRegression(max_iter=2000)
  classifier.fit(scaler.transform(train_features), train_labels)
  return float(classifier.score(scaler.transform(test_features), test_labels))


def majority_rate(labels: np.ndarray) -> float:
  """Accuracy of always guessing the most frequent label: the bar a probe must clear."""
  _, counts = np.unique(labels, return_counts=True)
  return float(counts.max() / counts.sum())
