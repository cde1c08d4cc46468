"""Data-parallel xgboost on Ray Train (training/distributed.py), on the session's real local Ray:
two workers train one model on their shards; the returned Pipeline takes raw frames, scores
well on a holdout, predicts exactly what the run's checkpointed booster predicts, and pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from mlplatform.errors import InputError
from mlplatform.spec import ModelSpec
from mlplatform.training.distributed import booster_params, fit_distributed

xgboost = pytest.importorskip("xgboost")
pytestmark = pytest.mark.ray


def _frame(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(n_samples=n, n_features=8, n_informative=5, random_state=seed)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    rng = np.random.default_rng(seed)
    region = np.where(y == 1, rng.choice(["north", "south"], n), rng.choice(["south", "east"], n))
    frame["region"] = pd.Series(region, dtype="string")
    frame.loc[rng.random(n) < 0.1, "region"] = pd.NA
    frame.loc[rng.random(n) < 0.05, "x0"] = np.nan
    return frame, y


def _spec(estimator: str = "xgboost.XGBClassifier", **kw: object) -> ModelSpec:
    return ModelSpec(task="classification", estimator=estimator,
                     params={"n_estimators": 30, "max_depth": 4}, num_workers=2, seed=7, **kw)


def test_two_workers_train_a_pipeline_that_matches_its_checkpoint(ray_connected, tmp_path: Path) -> None:
    X, y = _frame()
    X_train, y_train, X_test, y_test = X.iloc[:2400], y[:2400], X.iloc[2400:], y[2400:]
    pipe = fit_distributed(_spec(), X_train, y_train, {"learning_rate": 0.3},
                           storage_path=str(tmp_path), name="xgb-dist", max_failures=0)

    est = pipe.named_steps["model"]
    assert isinstance(est, xgboost.XGBClassifier)
    assert est.get_booster().num_boosted_rounds() == 30
    assert est.get_params()["learning_rate"] == 0.3
    assert list(est.classes_) == [0, 1]
    proba = pipe.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    assert roc_auc_score(y_test, proba[:, 1]) > 0.8
    assert set(np.unique(pipe.predict(X_test))) <= {0, 1}

    # The run's checkpoints live under storage_path/name; the last one is the returned model.
    saved = sorted((tmp_path / "xgb-dist").rglob("model.ubj"))
    assert saved, list(tmp_path.rglob("*"))
    boosters = [xgboost.Booster(model_file=str(p)) for p in saved]
    final = max(boosters, key=lambda b: b.num_boosted_rounds())
    assert final.num_boosted_rounds() == 30
    Xt = pipe.named_steps["preprocess"].transform(X_test)
    np.testing.assert_allclose(final.predict(xgboost.DMatrix(Xt)), proba[:, 1], rtol=1e-6)

    again = pickle.loads(pickle.dumps(pipe))  # what mlflow.sklearn stores
    np.testing.assert_array_equal(again.predict_proba(X_test), proba)


@pytest.mark.parametrize("estimator, message", [
    ("sklearn.ensemble.HistGradientBoostingClassifier", "needs an xgboost estimator"),
    ("xgboost.NoSuchModel", "cannot import"),
])
def test_a_non_xgboost_estimator_is_an_input_error(estimator: str, message: str, tmp_path: Path) -> None:
    X, y = _frame(200)
    with pytest.raises(InputError, match=message):
        fit_distributed(_spec(estimator), X, y, {}, storage_path=str(tmp_path), name="bad")


def test_booster_params_follow_the_task_and_the_sklearn_names() -> None:
    est = xgboost.XGBClassifier(n_estimators=12, learning_rate=0.1, max_depth=3, random_state=5)
    params, rounds = booster_params(est, "classification", 3, {})
    assert rounds == 12
    assert params["objective"] == "multi:softprob" and params["num_class"] == 3
    assert params["learning_rate"] == 0.1 and params["max_depth"] == 3 and params["random_state"] == 5
    assert "n_estimators" not in params and params["n_jobs"] == 1
    params, _ = booster_params(xgboost.XGBRegressor(), "regression", 0, {})
    assert params["objective"] == "reg:squarederror"
