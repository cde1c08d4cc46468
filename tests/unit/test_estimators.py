"""Estimators from a spec: the allow-list, parameter checks before any cluster work, and
the preprocessing every model gets (strings with missing values, unseen categories)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.base import BaseEstimator

from mlplatform.errors import InputError
from mlplatform.spec import ModelSpec, SearchSpec
from mlplatform.training.data import check_labels
from mlplatform.training.estimators import build_estimator, check_model, iterative_kind, new_estimator
from tests.conftest import ROOT, cli


def _model(**kw: object) -> ModelSpec:
    return ModelSpec.model_validate(kw)


def test_an_estimator_outside_the_allow_list_is_refused() -> None:
    with pytest.raises(InputError, match=r"model.estimator 'os.system': module not on the allow-list"):
        check_model(_model(estimator="os.system"))
    with pytest.raises(InputError, match="not on the allow-list"):
        check_model(_model(estimator="sklearnx.Evil"))  # a prefix match is by module, not by text
    # An operator can extend the list.
    est = new_estimator("tests.unit.test_estimators.MyClassifier", modules="sklearn,tests.unit")
    assert type(est).__name__ == "MyClassifier"


def test_an_allowed_name_that_is_not_an_estimator_class_is_never_called(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`model.estimator` names code in an allowed module; only an estimator class is accepted, and
    nothing is called before that is known (a function there could do anything)."""
    import sklearn

    calls: list[str] = []
    monkeypatch.setattr(sklearn, "show_versions", lambda: calls.append("show_versions"))
    with pytest.raises(InputError) as info:
        check_model(_model(estimator="sklearn.show_versions"))
    assert calls == []
    assert info.value.message.startswith("model.estimator 'sklearn.show_versions': a function, not a "
                                         "scikit-learn estimator class")
    with pytest.raises(InputError, match=r"model.estimator 'sklearn': a module, not an estimator class"):
        new_estimator("sklearn")  # a spec's pattern stops it earlier; direct callers get the same error
    with pytest.raises(InputError, match=r"model.estimator 'sklearn.ensemble': a module, not"):
        new_estimator("sklearn.ensemble")
    with pytest.raises(InputError, match=r"'sklearn.pipeline.Pipeline': cannot be created without arguments"):
        new_estimator("sklearn.pipeline.Pipeline")


def test_clear_data_home_is_refused_and_the_folder_survives(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data_home = tmp_path / "scikit_learn_data"
    (data_home / "keep").mkdir(parents=True)
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(data_home))
    with pytest.raises(InputError) as info:
        check_model(_model(estimator="sklearn.datasets.clear_data_home"))
    assert (data_home / "keep").is_dir()
    assert info.value.message.startswith("model.estimator 'sklearn.datasets.clear_data_home': a function")


def test_a_bad_estimator_in_a_spec_exits_2_before_anything_runs(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The path `platformctl train` takes (check_model, as the train step does), in-process so the
    patched function would see a call: exit 2, the field and value named, nothing run."""
    import sklearn

    calls: list[str] = []
    monkeypatch.setattr(sklearn, "show_versions", lambda: calls.append("show_versions"))
    monkeypatch.setenv("PLATFORM_HOME", str(tmp_path / "home"))
    spec = tmp_path / "bad.yaml"
    spec.write_text((ROOT / "jobs" / "examples" / "demo.yaml").read_text().replace(
        "estimator: sklearn.ensemble.HistGradientBoostingClassifier", "estimator: sklearn.show_versions"))
    result = cli("train", str(spec))
    assert calls == []
    assert result.returncode == 2, result.stdout + result.stderr
    err = " ".join(result.stderr.split())  # rich wraps long lines
    assert "model.estimator 'sklearn.show_versions': a function, not a scikit-learn estimator" in err
    assert "Traceback" not in result.stderr
    spec.write_text(spec.read_text().replace("estimator: sklearn.show_versions", "estimator: sklearn"))
    result = cli("train", str(spec))
    err = " ".join(result.stderr.split())
    assert result.returncode == 2, err
    assert "model.estimator: expected an import path such as package.module.Name, got 'sklearn'" in err


def test_xgboost_estimators_are_estimator_classes() -> None:
    pytest.importorskip("xgboost")
    assert type(new_estimator("xgboost.XGBClassifier")).__name__ == "XGBClassifier"
    assert type(new_estimator("xgboost.XGBRegressor")).__name__ == "XGBRegressor"


def test_a_missing_module_or_name_says_which() -> None:
    with pytest.raises(InputError, match="'sklearn.ensemble.NoSuchForest': cannot import it"):
        check_model(_model(estimator="sklearn.ensemble.NoSuchForest"))
    if importlib.util.find_spec("lightgbm") is None:
        with pytest.raises(InputError, match=r"module 'lightgbm' is not installed \(pip install lightgbm\)"):
            check_model(_model(estimator="lightgbm.LGBMClassifier"))


def test_parameters_the_estimator_rejects_are_named() -> None:
    with pytest.raises(InputError, match=r"model.params: HistGradientBoostingClassifier has no "
                                         r"parameter\(s\) \['learning_rat'\]"):
        check_model(_model(params={"learning_rat": 0.1}))
    with pytest.raises(InputError, match="model.params: .*learning_rate"):
        check_model(_model(params={"learning_rate": -1.0}))
    spec = _model(search={"space": {"max_leaf_nodes": {"type": "randint", "low": 1, "high": 8}}})
    with pytest.raises(InputError, match=r"model.search.space.max_leaf_nodes=1: .*max_leaf_nodes"):
        check_model(spec)
    with pytest.raises(InputError, match="is a regressor but model.task is 'classification'"):
        check_model(_model(estimator="sklearn.linear_model.Ridge"))


def test_an_empty_search_space_is_a_spec_error() -> None:
    with pytest.raises(ValidationError, match="search.space is empty"):
        SearchSpec.model_validate({"space": {}})
    with pytest.raises(ValidationError, match="not a classification metric"):
        _model(metric="rmse")
    assert _model(metric="log_loss").metric_mode == "min"
    space = {"alpha": {"type": "uniform", "low": 0, "high": 1}}
    with pytest.raises(ValidationError, match="grace_period 5 is more reports than a trial makes"):
        SearchSpec.model_validate({"space": space, "scheduler": "asha", "max_iterations": 40,
                                   "report_every": 10, "grace_period": 5})
    with pytest.raises(ValidationError, match="algorithm 'grid' needs every dimension"):
        SearchSpec.model_validate({"space": space, "algorithm": "grid"})
    with pytest.raises(ValidationError, match="algorithm 'optuna' cannot sample grid dimensions"):
        SearchSpec.model_validate({"space": {"a": {"type": "grid", "values": [1, 2]}}, "algorithm": "optuna"})
    with pytest.raises(ValidationError, match="metric_mode 'min' contradicts 'roc_auc'"):
        _model(metric="roc_auc", metric_mode="min")
    asha = {"scheduler": "asha", "space": {"C": {"type": "uniform", "low": 0.1, "high": 1}}}
    with pytest.raises(InputError, match="'asha' needs an iterative estimator"):
        check_model(_model(estimator="sklearn.svm.SVC", search=asha))
    grows = {"scheduler": "asha", "space": {"max_iter": {"type": "randint", "low": 10, "high": 50}}}
    with pytest.raises(InputError, match="model.search.space.max_iter: with scheduler 'asha'"):
        check_model(_model(search=grows))


def test_a_single_class_label_is_refused() -> None:
    with pytest.raises(InputError, match=r"single class \(0\) in 5 rows"):
        check_labels(np.zeros(5, dtype=int), "classification")
    check_labels(np.zeros(5), "regression")


def test_preprocessing_handles_strings_missing_values_and_unseen_categories() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200), "n": rng.integers(0, 5, 200).astype(float),
                      "c": pd.array(rng.choice(["a", "b", None], 200), dtype="string"),
                      "flag": pd.array(rng.choice([True, False], 200), dtype="boolean")})
    X.loc[::7, "x"] = np.nan
    y = (X["x"].fillna(0) > 0).astype(int).to_numpy()
    for encoding in ("onehot", "ordinal"):
        model = _model(estimator="sklearn.linear_model.LogisticRegression", categorical_encoding=encoding)
        pipe = build_estimator(model, X).fit(X, y)
        new = pd.DataFrame({"x": [1.0, np.nan], "n": [2.0, 1.0],
                            "c": pd.array(["zzz", None], dtype="string"),
                            "flag": pd.array([None, True], dtype="boolean")})
        assert pipe.predict_proba(new).shape == (2, 2)
    assert build_estimator(_model(seed=5), X).named_steps["model"].random_state == 5


def test_iterative_estimators_are_recognised() -> None:
    assert iterative_kind(new_estimator("sklearn.ensemble.HistGradientBoostingClassifier")) == (
        "warm_start", "max_iter")
    assert iterative_kind(new_estimator("sklearn.ensemble.RandomForestClassifier")) == (
        "warm_start", "n_estimators")
    # max_iter counts per fit call there: growing it would train more than was reported.
    assert iterative_kind(new_estimator("sklearn.linear_model.SGDClassifier")) == ("partial_fit", None)
    assert iterative_kind(new_estimator("sklearn.neural_network.MLPClassifier")) == ("partial_fit", None)
    assert iterative_kind(new_estimator("sklearn.linear_model.LogisticRegression")) is None
    assert iterative_kind(new_estimator("sklearn.naive_bayes.GaussianNB")) == ("partial_fit", None)
    assert iterative_kind(new_estimator("sklearn.svm.SVC")) is None


class MyClassifier(BaseEstimator):
    """A stand-in user estimator living outside sklearn, to test the allow-list extension."""

    def fit(self, X: object, y: object) -> MyClassifier:
        return self
