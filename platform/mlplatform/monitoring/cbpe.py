"""Confidence-based performance estimation (CBPE): a classifier's metric before its labels arrive.

Feedback often comes days after a prediction. If the model's scores are calibrated
(P(y = 1 | score = s) = s) and the relation between features and label has not changed
(no concept drift), every prediction is a Bernoulli draw with its own score, so the
confusion matrix a window *will* have is known in expectation from the scores alone:

    predicted 1 (s >= threshold): expected TP += s,  expected FP += 1 - s
    predicted 0 (s <  threshold): expected FN += s,  expected TN += 1 - s

hence expected accuracy and F1; and the expected ROC curve (true and false positive
rates at every score as threshold, with expected counts), hence expected ROC AUC. This
is what NannyML's CBPE computes (nannyml/performance_estimation/confidence_based). It is
reimplemented here in a few numpy lines: nannyml pins pandas and pulls a large tree of
dependencies for these sums.

Covariate shift (the score distribution moves) is exactly what the estimate follows.
Its two assumptions are checked, not trusted: calibration on labelled rows (expected
calibration error and a Hosmer-Lemeshow test), and, once labels arrive, whether the
realised metric stays within a tolerance of the estimate (a gap beyond it hints at
concept drift).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel
from scipy import stats

CALIBRATION_BINS = 10
MIN_CALIBRATION_ROWS = 200  # fewer labelled rows: calibration is not judged (too noisy)
CALIBRATION_ALPHA = 0.01  # Hosmer-Lemeshow p-value below this ...
MATERIAL_ECE = 0.03  # ... and an expected calibration error above this: miscalibrated


class Estimate(BaseModel):
    """Expected metrics of a window of binary predictions, from their scores alone."""

    rows: int
    threshold: float
    accuracy: float
    f1: float
    roc_auc: float
    positive_rate: float  # the expected share of positives (the mean score)

    def metric(self, name: str) -> float | None:
        """The estimate of `name` (None for a metric CBPE does not estimate here)."""
        return {"accuracy": self.accuracy, "f1": self.f1, "roc_auc": self.roc_auc}.get(name)


class Calibration(BaseModel):
    """Whether scores are calibrated on labelled rows: CBPE's first assumption."""

    rows: int
    ece: float | None = None  # expected calibration error over equal-count bins
    hosmer_lemeshow: float | None = None
    p_value: float | None = None
    calibrated: bool | None = None  # None: too few labelled rows to judge
    note: str = ""


def _scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=float).ravel()
    s = s[np.isfinite(s)]
    if s.size and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"scores must be probabilities in [0, 1], got values in [{s.min():g}, {s.max():g}]")
    return s


def expected_confusion(scores: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float]:
    """(TP, FP, FN, TN) expected from calibrated scores at a decision threshold."""
    s = _scores(scores)
    pred = s >= threshold
    hit, miss = s[pred], s[~pred]
    return float(hit.sum()), float((1 - hit).sum()), float(miss.sum()), float((1 - miss).sum())


def expected_roc_auc(scores: np.ndarray) -> float:
    """Area under the expected ROC curve: each score is a threshold, with expected TPR and FPR.

    The Mann-Whitney form of the trapezoid area: every (positive weight s_i, negative weight
    1 - s_j) pair counts when s_i > s_j, half when tied, normalised by the expected numbers
    of positives and negatives. NaN when a class is expected to be absent."""
    s = np.sort(_scores(scores))
    pos, neg = s.sum(), (1 - s).sum()
    if s.size == 0 or pos <= 0 or neg <= 0:
        return float("nan")
    values, start = np.unique(s, return_index=True)
    neg_w = np.add.reduceat(1 - s, start)  # negative weight at each distinct score
    pos_w = np.add.reduceat(s, start)
    below = np.cumsum(neg_w) - neg_w  # negative weight strictly below each distinct score
    return float(np.sum(pos_w * (below + 0.5 * neg_w)) / (pos * neg))


def estimate(scores: np.ndarray, threshold: float = 0.5) -> Estimate:
    """Expected accuracy, F1 and ROC AUC of binary predictions made at `threshold`."""
    s = _scores(scores)
    tp, fp, fn, tn = expected_confusion(s, threshold)
    n = max(s.size, 1)
    f1_den = 2 * tp + fp + fn
    return Estimate(rows=int(s.size), threshold=threshold, accuracy=(tp + tn) / n,
                    f1=2 * tp / f1_den if f1_den else float("nan"), roc_auc=expected_roc_auc(s),
                    positive_rate=float(s.mean()) if s.size else float("nan"))


def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS,
                min_rows: int = MIN_CALIBRATION_ROWS) -> Calibration:
    """Expected calibration error and the Hosmer-Lemeshow test over equal-count score bins.

    Both are needed: on many rows the test rejects deviations too small to move an estimate,
    and on few rows the ECE is mostly sampling noise. So scores count as miscalibrated only
    when the test rejects (p < CALIBRATION_ALPHA) and the ECE is material (> MATERIAL_ECE).
    The statistic has `bins` degrees of freedom: the scores were not fitted on these rows."""
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels, dtype=float).ravel()
    keep = np.isfinite(s) & np.isfinite(y)
    s, y = _scores(s[keep]), y[keep]
    n = int(s.size)
    if n < min_rows:
        return Calibration(rows=n, note=f"{n} labelled rows, fewer than {min_rows}: calibration not judged")
    order = np.argsort(s, kind="stable")
    groups = [g for g in np.array_split(order, bins) if g.size]
    observed = np.array([y[g].sum() for g in groups])
    expected = np.array([s[g].sum() for g in groups])
    variance = np.array([(s[g] * (1 - s[g])).sum() for g in groups])
    ece = float(np.abs(observed - expected).sum() / n)
    hl = float(np.sum((observed - expected) ** 2 / np.maximum(variance, 1e-9)))
    p = float(stats.chi2.sf(hl, df=len(groups)))
    ok = not (p < CALIBRATION_ALPHA and ece > MATERIAL_ECE)
    note = "" if ok else (f"scores are not calibrated (ECE {ece:.3f}, Hosmer-Lemeshow p={p:.2g} on {n} "
                          "labelled rows): the estimate is biased")
    return Calibration(rows=n, ece=ece, hosmer_lemeshow=hl, p_value=p, calibrated=ok, note=note)
