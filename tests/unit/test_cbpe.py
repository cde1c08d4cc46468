"""CBPE against an independent truth: a simulated calibrated classifier whose labels are drawn
from Bernoulli(score), under covariate shift. The realised metrics (scikit-learn on the drawn
labels) must match the estimates from the scores alone; miscalibrated scores must be caught."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlplatform.monitoring.cbpe import calibration, estimate, expected_confusion, expected_roc_auc

N = 20_000
TOLERANCE = 0.02  # |estimate - realised| at n = 20k (sampling noise of the AUC there is ~0.004)


def _scores(rng: np.random.Generator, shift: float, spread: float, n: int = N) -> np.ndarray:
    """A model's calibrated scores: sigmoid(-1 + 1.5 x) with x ~ N(shift, spread), the covariate
    whose distribution moves between windows."""
    x = rng.normal(shift, spread, n)
    return 1 / (1 + np.exp(-(-1 + 1.5 * x)))


@pytest.mark.parametrize(("seed", "shift", "spread"), [(0, 0.0, 1.0), (1, 1.0, 0.6), (2, -0.8, 1.6),
                                                       (3, 0.5, 0.3)])
def test_estimates_match_realised_metrics_under_covariate_shift(seed: int, shift: float,
                                                                 spread: float) -> None:
    rng = np.random.default_rng(seed)
    s = _scores(rng, shift, spread)
    y = (rng.uniform(size=N) < s).astype(int)  # calibrated by construction
    est = estimate(s)
    assert abs(est.roc_auc - skm.roc_auc_score(y, s)) < TOLERANCE
    assert abs(est.accuracy - skm.accuracy_score(y, s >= 0.5)) < TOLERANCE
    assert abs(est.f1 - skm.f1_score(y, s >= 0.5)) < TOLERANCE
    assert calibration(s, y).calibrated is True


def test_the_shifts_move_the_metric_more_than_the_tolerance() -> None:
    """Not a trivial match: the shifted windows' realised AUCs differ by far more than the
    tolerance, and the estimate follows each."""
    rng = np.random.default_rng(5)
    aucs = []
    for shift, spread in ((0.0, 1.0), (0.5, 0.3)):
        s = _scores(rng, shift, spread)
        y = (rng.uniform(size=N) < s).astype(int)
        aucs.append((skm.roc_auc_score(y, s), estimate(s).roc_auc))
    assert abs(aucs[0][0] - aucs[1][0]) > 5 * TOLERANCE
    assert all(abs(real - est) < TOLERANCE for real, est in aucs)


def test_expected_auc_is_the_weighted_auc_of_expected_labels() -> None:
    """Exactly scikit-learn's AUC where each row is a positive of weight s and a negative of
    weight 1 - s (ties included: scores rounded to two decimals)."""
    rng = np.random.default_rng(7)
    s = np.round(rng.beta(2, 3, 2000), 2)
    truth = skm.roc_auc_score(np.r_[np.ones_like(s), np.zeros_like(s)], np.r_[s, s],
                              sample_weight=np.r_[s, 1 - s])
    assert expected_roc_auc(s) == pytest.approx(truth, abs=1e-12)
    tp, fp, fn, tn = expected_confusion(s, 0.5)
    assert tp + fp + fn + tn == pytest.approx(len(s))
    assert tp + fn == pytest.approx(s.sum())


@pytest.mark.parametrize("temperature", [0.4, 2.5])  # over- and under-confident scores
def test_miscalibrated_scores_are_detected(temperature: float) -> None:
    rng = np.random.default_rng(11)
    s = _scores(rng, 0.0, 1.0)
    logit = np.log(s / (1 - s))
    y = (rng.uniform(size=N) < 1 / (1 + np.exp(-logit * temperature))).astype(int)
    cal = calibration(s, y)
    assert cal.calibrated is False and "not calibrated" in cal.note
    # ... and that is why it matters: the estimate is off by more than the tolerance.
    assert abs(estimate(s).roc_auc - skm.roc_auc_score(y, s)) > TOLERANCE


def test_few_labelled_rows_are_not_judged_and_bad_scores_are_refused() -> None:
    assert calibration(np.array([0.2, 0.9]), np.array([0, 1])).calibrated is None
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimate(np.array([0.2, 1.7]))
