"""A model's predictions for scoring: the classes come from the same pass as the
probabilities where the estimator's `predict` is their argmax, and are the classes its own
`predict` gives (scikit-learn's answer is the truth here, computed separately)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from mlplatform.evaluation.metrics import evaluate_model, predictions, predicts_by_argmax


def _data(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=1500, n_features=8, n_informative=5, n_classes=classes,
                               random_state=3)
    labels = np.array(["churned", "kept", "paused"])[y]  # string classes: classes_ is not 0..k
    return X[:1000], labels[:1000], X[1000:]


ARGMAX = [HistGradientBoostingClassifier(max_iter=30, random_state=0),
          RandomForestClassifier(n_estimators=20, random_state=0),
          ExtraTreesClassifier(n_estimators=20, random_state=0),
          DecisionTreeClassifier(max_depth=4, random_state=0)]


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("estimator", ARGMAX, ids=lambda e: type(e).__name__)
def test_the_classes_from_the_probabilities_are_the_models_own(estimator: Any, classes: int) -> None:
    X, y, X_new = _data(classes)
    model = make_pipeline(StandardScaler(), estimator).fit(X, y)
    assert predicts_by_argmax(model)
    pred, proba = predictions("classification", model, X_new)
    assert pred.tolist() == model.predict(X_new).tolist()
    expected = model.predict_proba(X_new)
    assert np.array_equal(proba, expected[:, 1] if classes == 2 else expected)


def test_one_pass_over_the_trees_for_both(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y, X_new = _data(2)
    model = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=20)).fit(X, y)
    calls: list[str] = []
    proba = HistGradientBoostingClassifier.predict_proba

    def counted(self: Any, X: Any) -> Any:
        calls.append("predict_proba")
        return proba(self, X)

    def refused(self: Any, X: Any) -> Any:
        calls.append("predict")
        return HistGradientBoostingClassifier.predict_proba(self, X)[:, 1] > 2  # wrong on purpose

    monkeypatch.setattr(HistGradientBoostingClassifier, "predict_proba", counted)
    monkeypatch.setattr(HistGradientBoostingClassifier, "predict", refused)
    metrics = evaluate_model("classification", model, X_new, np.array(["kept"] * len(X_new)))
    assert calls == ["predict_proba"]
    assert metrics["accuracy"] > 0  # the classes came from the probabilities, not `predict`


def test_a_classifier_whose_predict_is_its_own_keeps_it() -> None:
    X, y, X_new = _data(2)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    assert not predicts_by_argmax(model)
    pred, proba = predictions("classification", model, X_new)
    assert pred.tolist() == model.predict(X_new).tolist()
    assert proba is not None and np.array_equal(proba, model.predict_proba(X_new)[:, 1])


def test_regression_has_no_probabilities() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y, X_new = _data(2)
    model = HistGradientBoostingRegressor(max_iter=10).fit(X, (y == "kept").astype(float))
    pred, proba = predictions("regression", model, X_new)
    assert proba is None and np.allclose(pred, model.predict(X_new))
