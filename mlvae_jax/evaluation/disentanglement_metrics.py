"""The standard disentanglement suite of Locatello et al. (2019), defined as disentanglement_lib
computes it, on numpy codes [n, d] and integer factor levels [n, k].

- Discretisation (MIG, modularity): every code dimension is cut into `num_bins` (20, as in
  disentanglement_lib) equal-width bins between its minimum and maximum. Mutual information
  and entropy are in nats, from the empirical joint counts.
- Scores that fit a predictor (SAP, DCI, explicitness) fit it on a seeded random
  `train_fraction` of the rows and score it on the rest, like disentanglement_lib's
  fixed-data variants.
- Factors with a single level carry nothing to capture and are left out of every score.
- Where a score compares the best code dimension with the second best (MIG, SAP), a code of
  one dimension has no competitor: the second best counts as 0.

FactorVAE and BetaVAE scores need codes of observations drawn with one factor fixed
(`factor_sampling`); here they only see those codes, so the evaluator can score any subset of
the code dimensions (content, style) from one draw.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats
from sklearn import ensemble, linear_model, svm

NUM_BINS = 20


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Float64 codes and the factor columns that vary; bad shapes fail in one line."""
  codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
  if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
    raise ValueError(
        f"codes must be [n, d] and factors [n, k] with the same n; got {codes.shape} and "
        f"{factors.shape}"
    )
  if factors.dtype.kind not in "biu":
    raise ValueError(f"factors must be integer levels; got dtype {factors.dtype}")
  varying = factors[:, [len(np.unique(column)) > 1 for column in factors.T]]
  if varying.shape[1] == 0:
    raise ValueError("no factor takes more than one value: there is nothing to disentangle")
  return codes, varying


def _split(n: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Seeded random train / test rows; both parts non-empty."""
  if not 0.0 < train_fraction < 1.0:
    raise ValueError(f"train_fraction={train_fraction} must lie strictly between 0 and 1")
  order = np.random.default_rng(seed).permutation(n)
  cut = min(max(1, int(round(n * train_fraction))), n - 1)
  return order[:cut], order[cut:]


def discretise(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
  """Bin index in [0, num_bins) of every entry: equal-width bins per column, min to max."""
  codes = np.asarray(codes, np.float64)
  low, high = codes.min(axis=0), codes.max(axis=0)
  width = np.where(high > low, high - low, 1.0)
  return np.clip(np.floor((codes - low) / width * num_bins), 0, num_bins - 1).astype(np.int64)


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
  """I(a; b) in nats of two discrete label vectors, from their joint counts."""
  _, a = np.unique(a, return_inverse=True)
  _, b = np.unique(b, return_inverse=True)
  joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1))
  joint = joint.reshape(a.max() + 1, b.max() + 1) / len(a)
  outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
  nonzero = joint > 0
  return float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])))


def mutual_information_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
  """[d, k] mutual information between each discretised code dimension and each factor."""
  binned = discretise(codes, num_bins)
  return np.array([[mutual_information(code, factor) for factor in factors.T] for code in binned.T])


def _top_two_gap(scores: np.ndarray) -> np.ndarray:
  """Per column of [d, k]: best minus second best row (second best 0 when d = 1)."""
  ordered = np.sort(scores, axis=0)[::-1]
  second = ordered[1] if len(ordered) > 1 else np.zeros(scores.shape[1])
  return ordered[0] - second


def mig(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = NUM_BINS) -> float:
  """Mutual Information Gap (Chen et al. 2018): per factor, the gap between the two code
  dimensions most informative about it, over the factor's entropy; mean over factors."""
  codes, factors = _check(codes, factors)
  information = mutual_information_matrix(codes, factors, num_bins)
  entropy = np.array([mutual_information(factor, factor) for factor in factors.T])
  return float(np.mean(_top_two_gap(information) / entropy))


def sap(codes: np.ndarray, factors: np.ndarray, *, train_fraction: float = 0.8, seed: int = 0) -> float:
  """Separated Attribute Predictability (Kumar et al. 2018), discrete factors: per factor, the
  gap in test accuracy between the two code dimensions that alone predict it best (a linear
  SVM on one dimension, C = 0.01, balanced classes); mean over factors."""
  codes, factors = _check(codes, factors)
  train, test = _split(len(codes), train_fraction, seed)
  accuracy = np.zeros((codes.shape[1], factors.shape[1]))
  for i, code in enumerate(codes.T):
    for j, factor in enumerate(factors.T):
      if len(np.unique(factor[train])) < 2:
        continue  # nothing to learn from this training part: no dimension predicts it
      classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
      classifier.fit(code[train, None], factor[train])
      accuracy[i, j] = np.mean(classifier.predict(code[test, None]) == factor[test])
  return float(np.mean(_top_two_gap(accuracy)))


def _one_minus_entropy(weights: np.ndarray) -> np.ndarray:
  """Per row of non-negative weights: 1 - entropy of the row normalised, in base row length."""
  size = weights.shape[1]
  if size == 1:
    return np.ones(len(weights))
  p = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-300)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(p > 0, p * np.log(p), 0.0)
  return 1.0 + terms.sum(axis=1) / np.log(size)


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
  """(disentanglement, completeness) of a [d, k] importance matrix (Eastwood & Williams 2018):
  how much each code dimension serves one factor, and each factor lives in one dimension,
  weighted by the dimensions' and factors' shares of the total importance."""
  importance = np.abs(np.asarray(importance, np.float64))
  total = importance.sum()
  if total == 0:
    return 0.0, 0.0
  disentanglement = np.sum(_one_minus_entropy(importance) * importance.sum(axis=1) / total)
  completeness = np.sum(_one_minus_entropy(importance.T) * importance.sum(axis=0) / total)
  return float(disentanglement), float(completeness)


def dci(codes: np.ndarray, factors: np.ndarray, *, train_fraction: float = 0.8, seed: int = 0,
        num_trees: int = 100) -> dict[str, float]:
  """DCI from gradient boosted trees predicting each factor from the whole code: importance
  matrix -> disentanglement and completeness; informativeness = mean test accuracy."""
  codes, factors = _check(codes, factors)
  train, test = _split(len(codes), train_fraction, seed)
  importance = np.zeros((codes.shape[1], factors.shape[1]))
  accuracy = []
  for j, factor in enumerate(factors.T):
    model = ensemble.GradientBoostingClassifier(n_estimators=num_trees, random_state=seed)
    model.fit(codes[train], factor[train])
    importance[:, j] = model.feature_importances_
    accuracy.append(np.mean(model.predict(codes[test]) == factor[test]))
  disentanglement, completeness = dci_scores(importance)
  return {"disentanglement": disentanglement, "completeness": completeness,
          "informativeness": float(np.mean(accuracy))}


def modularity(information: np.ndarray) -> float:
  """Modularity (Ridgeway & Mozer 2018) of a [d, k] mutual information matrix: 1 - the
  squared information a dimension shares with its other factors, relative to the ideal of
  none; dimensions with no information score 0."""
  squared = np.square(np.asarray(information, np.float64))
  best = squared.max(axis=1)
  others = max(squared.shape[1] - 1, 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    deviation = (squared.sum(axis=1) - best) / (best * others)
  return float(np.mean(np.where(best > 0, 1.0 - deviation, 0.0)))


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
  """Area under the ROC curve: the chance that a random positive outscores a random
  negative (ties count half), from the ranks of the scores (Mann-Whitney U)."""
  positive = np.asarray(positive, bool)
  count, total = int(positive.sum()), len(positive)
  ranks = stats.rankdata(score)  # ties get their average rank
  return float((ranks[positive].sum() - count * (count + 1) / 2) / (count * (total - count)))


def _explicitness(train_codes: np.ndarray, train_factor: np.ndarray, test_codes: np.ndarray,
                  test_factor: np.ndarray) -> float:
  """Macro one-vs-rest ROC-AUC of a logistic regression, over the classes the test part can
  score (present and absent in it)."""
  classifier = linear_model.LogisticRegression(max_iter=1000).fit(train_codes, train_factor)
  probabilities = classifier.predict_proba(test_codes)
  scores = [
      roc_auc(test_factor == label, probabilities[:, c])
      for c, label in enumerate(classifier.classes_)
      if 0 < np.sum(test_factor == label) < len(test_factor)
  ]
  return float(np.mean(scores)) if scores else float("nan")


def modularity_explicitness(
    codes: np.ndarray, factors: np.ndarray, *, num_bins: int = NUM_BINS,
    train_fraction: float = 0.8, seed: int = 0,
) -> dict[str, float]:
  """Modularity from the discretised training codes' mutual information; explicitness as the
  mean over factors of a linear classifier's test ROC-AUC on standardised codes."""
  codes, factors = _check(codes, factors)
  train, test = _split(len(codes), train_fraction, seed)
  mean, std = codes[train].mean(axis=0), codes[train].std(axis=0)
  standard = (codes - mean) / np.where(std > 0, std, 1.0)
  explicitness = [
      _explicitness(standard[train], factor[train], standard[test], factor[test])
      for factor in factors.T if len(np.unique(factor[train])) > 1
  ]
  return {
      "modularity": modularity(mutual_information_matrix(codes[train], factors[train], num_bins)),
      "explicitness": float(np.nanmean(explicitness)) if explicitness else float("nan"),
  }


class FixedFactorCodes(NamedTuple):
  """Codes of `m` batches whose observations share the level of one factor each."""

  factor: np.ndarray  # [m] int: the factor held fixed in batch i
  codes: np.ndarray  # [m, b, d]

  def restrict(self, dims: np.ndarray) -> FixedFactorCodes:
    return FixedFactorCodes(self.factor, self.codes[..., dims])


class PairedCodes(NamedTuple):
  """Codes of `m` batches of pairs; pair members share the level of the batch's factor."""

  factor: np.ndarray  # [m] int
  first: np.ndarray  # [m, b, d]
  second: np.ndarray  # [m, b, d]

  def restrict(self, dims: np.ndarray) -> PairedCodes:
    return PairedCodes(self.factor, self.first[..., dims], self.second[..., dims])


def _factor_votes(batches: FixedFactorCodes, scale: np.ndarray, active: np.ndarray, num_factors: int) -> np.ndarray:
  """[k, d] counts: how often dimension d had the least relative variance when factor k was fixed."""
  relative = np.var(batches.codes, axis=1, ddof=1) / scale[None]
  winner = np.flatnonzero(active)[np.argmin(relative[:, active], axis=1)]
  votes = np.zeros((num_factors, len(scale)), np.int64)
  np.add.at(votes, (batches.factor, winner), 1)
  return votes


def factor_vae_score(
    train: FixedFactorCodes, evaluation: FixedFactorCodes, reference_codes: np.ndarray, *,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
  """FactorVAE score (Kim & Mnih 2018): in each batch with one factor fixed, the dimension of
  least variance (relative to its variance over `reference_codes`, dimensions with a standard
  deviation under `prune_threshold` left out) votes for that factor; a majority-vote
  classifier from dimension to factor is fitted on `train` and scored on `evaluation`."""
  scale = np.var(np.asarray(reference_codes, np.float64), axis=0, ddof=1)
  active = np.sqrt(scale) >= prune_threshold
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}
  num_factors = int(max(train.factor.max(), evaluation.factor.max())) + 1
  train_votes = _factor_votes(train, scale, active, num_factors)
  eval_votes = _factor_votes(evaluation, scale, active, num_factors)
  predicted = np.argmax(train_votes, axis=0)  # [d]: the factor each dimension stands for
  dims = np.arange(len(scale))
  return {
      "train_accuracy": float(train_votes[predicted, dims].sum() / train_votes.sum()),
      "eval_accuracy": float(eval_votes[predicted, dims].sum() / eval_votes.sum()),
      "num_active_dims": float(active.sum()),
  }


def beta_vae_score(train: PairedCodes, evaluation: PairedCodes, *, seed: int = 0) -> dict[str, float]:
  """BetaVAE score (Higgins et al. 2017): a logistic regression names the fixed factor from a
  batch's mean absolute difference between pair members' codes; train and eval accuracy."""
  features = lambda pairs: np.mean(np.abs(pairs.first - pairs.second), axis=1)
  if len(np.unique(train.factor)) < 2:
    raise ValueError("beta_vae_score needs training batches that fix at least two factors")
  classifier = linear_model.LogisticRegression(max_iter=1000, random_state=seed)
  classifier.fit(features(train), train.factor)
  return {
      "train_accuracy": float(classifier.score(features(train), train.factor)),
      "eval_accuracy": float(classifier.score(features(evaluation), evaluation.factor)),
  }
