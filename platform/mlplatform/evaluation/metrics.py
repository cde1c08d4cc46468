"""Model metrics by task, computed the same way for tuning, the gate and reproduction.

One function per task so that a challenger, its champion and a reproduced model are
always scored by the same code on the same rows (scikit-learn does the arithmetic).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn import metrics as skm

from mlplatform.evaluation.metric_names import TASK_METRICS, greater_is_better

__all__ = ["TASK_METRICS", "greater_is_better", "score", "predictions", "evaluate_model"]

Task = Literal["classification", "regression"]


def _positive_proba(model: Any, X: Any) -> np.ndarray:
    return _positive(np.asarray(model.predict_proba(X)))


def _positive(proba: np.ndarray) -> np.ndarray:
    return proba[:, 1] if proba.ndim == 2 and proba.shape[1] == 2 else proba


# Classifiers whose `predict` is, in scikit-learn's own code, `classes_` at the argmax of
# `predict_proba` (ties to the first class, as numpy's argmax), or, for HistGradientBoosting,
# of the raw scores the probabilities are a monotone map of (binary: raw > 0; the two can
# only differ where expit rounds a raw score under 1e-16 to exactly 0.5): for them one pass
# over the trees gives both the classes and the probabilities. A trial's scoring predicted twice (the
# trees, and a pipeline's preprocessing, walked two times): 66.7 s of trial time against
# joblib's 56.4 s in benchmarks/tuning.py. Others keep their own `predict` (a logistic
# regression's threshold, an SVC's Platt scaling, which can disagree with its probabilities).
_ARGMAX_PREDICT = frozenset({
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
})


def _final_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)  # a scikit-learn Pipeline: its last step predicts
    return _final_step(steps[-1][1]) if isinstance(steps, list) and steps else model


def predicts_by_argmax(model: Any) -> bool:
    """Whether `model.predict` is the argmax of its probabilities (by its class, see above)."""
    final = _final_step(model)
    cls = type(final)
    return (f"{cls.__module__}.{cls.__qualname__}" in _ARGMAX_PREDICT
            and getattr(final, "n_outputs_", 1) == 1 and hasattr(final, "classes_"))


def score(task: Task, y_true: Any, y_pred: Any, proba: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of `task`; a metric that is undefined on these rows (one class only) is NaN."""
    y_true = np.asarray(y_true)
    nan = float("nan")
    if task == "regression":
        y_pred = np.asarray(y_pred, dtype="float64")
        if not np.isfinite(y_pred).all():  # a model that answers NaN is unscored, never an error
            return {"rmse": nan, "mae": nan, "r2": nan}
        return {"rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
                "mae": float(skm.mean_absolute_error(y_true, y_pred)),
                "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan")}
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred))}
    binary = len(np.unique(y_true)) == 2 and (proba is None or proba.ndim == 1)
    out["f1"] = float(skm.f1_score(y_true, y_pred, average="binary" if binary else "macro",
                                   zero_division=0))
    if proba is None or len(np.unique(y_true)) < 2 or not np.isfinite(proba).all():
        out["roc_auc"] = out["log_loss"] = float("nan")
        return out
    if proba.ndim == 1:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba))
        out["log_loss"] = float(skm.log_loss(y_true, np.clip(proba, 1e-15, 1 - 1e-15), labels=[0, 1]))
    else:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, proba, multi_class="ovr"))
        out["log_loss"] = float(skm.log_loss(y_true, proba))
    return out


def evaluate_model(task: Task, model: Any, X: Any, y: Any) -> dict[str, float]:
    return score(task, y, *predictions(task, model, X))


def predictions(task: Task, model: Any, X: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions (and positive-class probabilities) once, for scoring many slices."""
    if task != "classification" or not hasattr(model, "predict_proba"):
        return np.asarray(model.predict(X)), None
    if predicts_by_argmax(model):
        full = np.asarray(model.predict_proba(X))
        return np.asarray(_final_step(model).classes_).take(np.argmax(full, axis=1)), _positive(full)
    return np.asarray(model.predict(X)), _positive_proba(model, X)
