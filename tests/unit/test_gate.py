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


# --- an undefined metric (NaN, infinite or missing) never passes ------------------------------


class NoProba:
    """A classifier without predict_proba: accuracy and f1 exist, roc_auc and log_loss are NaN."""

    def __init__(self, pred: np.ndarray):
        self.pred = pred

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.pred[X.index.to_numpy()]


# Every way a spec can (or cannot) name the primary metric; "{primary}" is filled in per case.
THRESHOLDS: dict[str, list[dict]] = {
    "none": [],
    "primary value": [{"metric": "{primary}", "min_value": 0.5}],
    "primary change only": [{"metric": "{primary}", "min_absolute_change": 0.0}],
    "another metric": [{"metric": "accuracy", "min_value": 0.5}],
}


def _spec(thresholds: str, require_better: bool, primary: str, **extra: object) -> EvaluationSpec:
    rules = [{k: (primary if v == "{primary}" else v) for k, v in t.items()} for t in THRESHOLDS[thresholds]]
    return EvaluationSpec.model_validate({"require_better_than_champion": require_better,
                                          "thresholds": rules, **extra})


@pytest.mark.parametrize("undefined", ["nan", "missing"])
@pytest.mark.parametrize("with_champion", [False, True], ids=["no champion", "champion"])
@pytest.mark.parametrize("thresholds", list(THRESHOLDS))
@pytest.mark.parametrize("require_better", [True, False], ids=["require better", "not required"])
def test_an_undefined_primary_metric_never_passes(data: tuple, require_better: bool, thresholds: str,
                                                  with_champion: bool, undefined: str) -> None:
    """Whatever the thresholds and require_better say, an unscorable challenger is rejected.

    "nan": a classifier without predict_proba has no roc_auc (NaN) but a perfect accuracy.
    "missing": a primary metric the scores lack (a regression metric on a classifier; the
    spec loader refuses it, so ModelSpec is built unchecked, as a corrupted record could be).
    The control: the same configuration passes a scorable, better challenger, so the
    rejection is the undefined metric's doing and not the configuration's.
    """
    X, y = data
    champion = _model(y, 0.8, 2) if with_champion else None
    if undefined == "nan":
        model_spec, challenger, primary = ModelSpec(), NoProba(y.copy()), "roc_auc"
    else:
        model_spec = ModelSpec.model_construct(task="classification", metric="rmse")
        challenger, primary = _model(y, 1.2, 1), "rmse"
    spec = _spec(thresholds, require_better, primary)
    d = evaluate(model_spec, spec, challenger, champion, X, y, champion_version="1")
    assert not d.passed and d.reason.startswith("rejected")
    assert primary in d.reason and ("undefined" if undefined == "nan" else "missing") in d.reason
    defined = [c for c in d.checks if c.metric == primary and c.rule == "defined"]
    assert len(defined) == 1 and not defined[0].passed  # said once, however many rules name it

    control = evaluate(ModelSpec(), _spec(thresholds, require_better, "roc_auc"), _model(y, 1.2, 1),
                       champion, X, y, champion_version="1")
    assert control.passed, control.reason


@pytest.mark.parametrize("with_champion", [False, True], ids=["no champion", "champion"])
@pytest.mark.parametrize("require_better", [True, False], ids=["require better", "not required"])
@pytest.mark.parametrize(("rule", "word"), [({"metric": "log_loss", "max_value": 10.0}, "undefined"),
                                            ({"metric": "rmse", "max_value": 10.0}, "missing")])
def test_a_threshold_on_an_undefined_metric_fails(data: tuple, rule: dict, word: str, require_better: bool,
                                                  with_champion: bool) -> None:
    """The primary metric (accuracy) is fine; the threshold's metric is NaN (log_loss without
    probabilities) or absent from the scores (rmse of a classifier): no bound is met by nothing."""
    X, y = data
    spec = EvaluationSpec.model_validate({"require_better_than_champion": require_better,
                                          "thresholds": [rule]})
    champion = NoProba(np.zeros_like(y)) if with_champion else None  # accuracy ~0.5: the challenger is better
    d = evaluate(ModelSpec(metric="accuracy"), spec, NoProba(y.copy()), champion, X, y)
    assert d.challenger["accuracy"] == 1.0
    assert not d.passed and f"{rule['metric']} is {word}" in d.reason
    assert [c.passed for c in d.checks if c.metric == rule["metric"]] == [False]


def test_a_slice_the_challenger_cannot_score_fails_naming_the_slice(data: tuple) -> None:
    """The champion scores every slice; the challenger (no probabilities) scores none: each
    gated slice fails on its own account, saying what the champion had there."""
    X, y = data
    spec = EvaluationSpec.model_validate({"slices": ["plan"], "min_slice_rows": 100,
                                          "require_better_than_champion": False})
    d = evaluate(ModelSpec(), spec, NoProba(y.copy()), _model(y, 1.0, 2), X, y, X)
    assert not d.passed
    for s in d.slices:
        assert s.gated and not s.passed and s.regression is None
        assert np.isnan(s.challenger) and np.isfinite(s.champion)
        assert f"slice plan={s.value} ({s.rows} rows): roc_auc undefined for the challenger vs " \
               f"champion {s.champion:.4f}" in d.reason
    small = EvaluationSpec.model_validate({"slices": ["plan"], "min_slice_rows": 2000})
    d = evaluate(ModelSpec(), small, NoProba(y.copy()), _model(y, 1.0, 2), X, y, X)
    assert not any(s.gated for s in d.slices) and "slice" not in d.reason  # too small: reported only
    assert not d.passed  # ... but the primary metric still has to be defined


@pytest.mark.parametrize("with_champion", [False, True], ids=["no champion", "champion"])
def test_a_large_slice_neither_model_can_score_fails(data: tuple, with_champion: bool) -> None:
    """Every premium customer churned: AUC does not exist in that slice for any model, while
    the holdout as a whole scores fine. A slice large enough to gate that can never be judged
    fails the gate, with or without a champion (the choice documented in gate._slices), so a
    spec that gates it is fixed on its first run; below min_slice_rows it is only reported."""
    X, y = data
    y = y.copy()
    premium = (X["plan"] == "premium").to_numpy()
    y[premium] = 1
    challenger, champion = _model(y, 1.2, 1), (_model(y, 0.8, 2) if with_champion else None)
    plain = evaluate(ModelSpec(), EvaluationSpec(), challenger, champion, X, y)
    assert plain.passed, plain.reason  # without slices this challenger is promoted

    spec = EvaluationSpec.model_validate({"slices": ["plan"], "min_slice_rows": 100})
    d = evaluate(ModelSpec(), spec, challenger, champion, X, y, X)
    assert not d.passed
    slices = {s.value: s for s in d.slices}
    assert slices["premium"].gated and not slices["premium"].passed and np.isnan(slices["premium"].challenger)
    assert slices["free"].passed
    whom = "both models" if with_champion else "the challenger (no champion)"
    assert f"slice plan=premium (500 rows): roc_auc undefined for {whom}" in d.reason
    assert "plan=free" not in d.reason

    small = EvaluationSpec.model_validate({"slices": ["plan"], "min_slice_rows": 501})
    d = evaluate(ModelSpec(), small, challenger, champion, X, y, X)
    assert d.passed, d.reason
    assert not next(s for s in d.slices if s.value == "premium").gated


class _NaNModel:
    """A model that answers NaN (a broken regressor, a classifier with NaN probabilities)."""

    def __init__(self, task: str) -> None:
        self.task = task

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.full(len(X), np.nan) if self.task == "regression" else np.zeros(len(X), dtype=int)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.full((len(X), 2), np.nan)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_model_that_predicts_nan_is_rejected_not_a_crash(task: str) -> None:
    X = pd.DataFrame({"x": np.arange(40.0)})
    y = np.arange(40.0) if task == "regression" else np.arange(40) % 2
    metric = "rmse" if task == "regression" else "roc_auc"
    model = ModelSpec(task=task, metric=metric,
                      estimator="sklearn.linear_model.Ridge" if task == "regression"
                      else "sklearn.linear_model.LogisticRegression")
    decision = evaluate(model, EvaluationSpec(require_better_than_champion=False), _NaNModel(task), None,
                        X, y, X.assign(y=y), None)
    assert not decision.passed and metric in decision.reason
