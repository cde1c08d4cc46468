"""The champion/challenger gate: value and change thresholds (both directions), the first
model without a baseline, and slices that may not regress."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlplatform.evaluation.gate import evaluate
from mlplatform.spec import EvaluationSpec, ModelSpec


class Fixed:
    """A model whose positive-class probability is given per row (to set metrics exactly)."""

    def __init__(self, proba: np.ndarray):
        self.proba = proba

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.proba[X.index.to_numpy()]
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


@pytest.fixture
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    X = pd.DataFrame({"plan": np.where(np.arange(n) % 4 == 0, "premium", "free")})
    return X, y


def _model(y: np.ndarray, signal: float, seed: int, premium_signal: float | None = None,
           X: pd.DataFrame | None = None) -> Fixed:
    rng = np.random.default_rng(seed)
    s = np.full(len(y), signal)
    if premium_signal is not None and X is not None:
        s[(X["plan"] == "premium").to_numpy()] = premium_signal
    logit = s * (2 * y - 1) + rng.normal(0, 1, len(y))
    return Fixed(1 / (1 + np.exp(-logit)))


def test_the_first_model_has_no_baseline_but_value_thresholds_apply(data: tuple) -> None:
    X, y = data
    spec = EvaluationSpec.model_validate({"thresholds": [{"metric": "roc_auc", "min_value": 0.6,
                                                          "min_absolute_change": 0.01}]})
    good = evaluate(ModelSpec(), spec, _model(y, 1.0, 1), None, X, y)
    assert good.passed and good.champion is None and "first model" in good.reason
    assert any(c.skipped for c in good.checks)
    weak = evaluate(ModelSpec(), spec, _model(y, 0.0, 1), None, X, y)
    assert not weak.passed and "< min_value 0.6" in weak.reason


def test_only_a_better_challenger_passes(data: tuple) -> None:
    X, y = data
    spec = EvaluationSpec()
    better = evaluate(ModelSpec(), spec, _model(y, 1.2, 1), _model(y, 0.8, 2), X, y, champion_version="3")
    assert better.passed and "vs champion v3" in better.reason
    assert better.challenger["roc_auc"] > better.champion["roc_auc"]
    worse = evaluate(ModelSpec(), spec, _model(y, 0.8, 2), _model(y, 1.2, 1), X, y, champion_version="3")
    assert not worse.passed and "absolute change" in worse.reason
    same = _model(y, 1.0, 1)
    assert not evaluate(ModelSpec(), spec, same, same, X, y).passed  # equal is not better


def test_change_thresholds_absolute_relative_and_lower_is_better(data: tuple) -> None:
    X, y = data
    champion, challenger = _model(y, 1.0, 2), _model(y, 1.1, 1)
    base = evaluate(ModelSpec(), EvaluationSpec(), challenger, champion, X, y)
    gain = base.challenger["roc_auc"] - base.champion["roc_auc"]
    assert gain > 0
    need_more = EvaluationSpec.model_validate({"thresholds": [
        {"metric": "roc_auc", "min_absolute_change": gain + 0.01}]})
    assert not evaluate(ModelSpec(), need_more, challenger, champion, X, y).passed
    relative = EvaluationSpec.model_validate({"thresholds": [
        {"metric": "roc_auc", "min_relative_change": gain / base.champion["roc_auc"] - 1e-6}]})
    assert evaluate(ModelSpec(), relative, challenger, champion, X, y).passed
    # log_loss: lower is better, known from the metric itself.
    loss = EvaluationSpec.model_validate({"require_better_than_champion": False, "thresholds": [
        {"metric": "log_loss", "min_absolute_change": 0.0}]})
    d = evaluate(ModelSpec(), loss, challenger, champion, X, y)
    assert d.challenger["log_loss"] < d.champion["log_loss"] and d.passed
    d = evaluate(ModelSpec(), loss, champion, challenger, X, y)
    assert not d.passed and "log_loss" in d.reason


def test_a_slice_that_regresses_fails_the_gate(data: tuple) -> None:
    X, y = data
    spec = EvaluationSpec.model_validate({"slices": ["plan"], "max_slice_regression": 0.05,
                                          "min_slice_rows": 100})
    champion = _model(y, 1.0, 2)
    challenger = _model(y, 1.4, 1, premium_signal=0.2, X=X)  # better overall, worse for premium
    d = evaluate(ModelSpec(), spec, challenger, champion, X, y, X)
    assert d.challenger["roc_auc"] > d.champion["roc_auc"]
    assert not d.passed and "slice plan=premium" in d.reason
    premium = next(s for s in d.slices if s.value == "premium")
    assert premium.gated and premium.regression > 0.05 and premium.rows == 500
    small = EvaluationSpec.model_validate({"slices": ["plan"], "min_slice_rows": 1000})
    assert evaluate(ModelSpec(), small, challenger, champion, X, y, X).passed  # too small to gate


def test_an_undefined_metric_never_passes(data: tuple) -> None:
    X, y = data
    one_class = np.zeros_like(y)
    first = evaluate(ModelSpec(), EvaluationSpec(), _model(y, 1.0, 1), None, X, one_class)
    assert not first.passed and "undefined on this holdout" in first.reason
    both = evaluate(ModelSpec(), EvaluationSpec(), _model(y, 1.0, 1), _model(y, 0.5, 2), X, one_class)
    assert not both.passed
    empty = evaluate(ModelSpec(), EvaluationSpec(), _model(y, 1.0, 1), None, X.iloc[:0], y[:0])
    assert not empty.passed and "no rows" in empty.reason
