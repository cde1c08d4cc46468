"""Estimators named in a spec: the allow-list, parameter checks and the preprocessing.

A spec names code by import path and the cluster runs it, so the module must be on the
operator's allow-list (settings.estimator_modules), and the object must be a scikit-learn
estimator class: nothing else named there is ever called (`sklearn.show_versions`,
`sklearn.datasets.clear_data_home` are refused, not run). Every model is a scikit-learn
Pipeline: a ColumnTransformer derived from the training frame's dtypes (impute, scale,
one-hot or ordinal encode) in front of the estimator, so the saved artifact takes the
same raw feature rows the feature store serves.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from mlplatform.errors import InputError
from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES, on_allow_list
from mlplatform.spec import ModelSpec

Iterative = Literal["partial_fit", "warm_start"]
MODEL_STEP = "model"


def resolve(path: str, modules: str = DEFAULT_ESTIMATOR_MODULES) -> type[BaseEstimator]:
    """The estimator class `path` names, imported only from the allow-list and never called:
    a function or an instance there could do anything when called or cloned."""
    module, _, attr = path.rpartition(".")
    if not module:
        raise InputError(f"model.estimator {path!r}: a module, not an estimator class; name a class "
                         "such as sklearn.ensemble.HistGradientBoostingClassifier")
    if not on_allow_list(path, modules):
        raise InputError(f"model.estimator {path!r}: module not on the allow-list ({modules}); "
                         "an operator can extend it with PLATFORM_ESTIMATOR_MODULES")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        extra = f" (pip install {exc.name})" if exc.name in ("xgboost", "lightgbm") else ""
        raise InputError(f"model.estimator {path!r}: module {exc.name!r} is not installed{extra}") \
            from None
    except (ImportError, AttributeError, ValueError) as exc:
        raise InputError(f"model.estimator {path!r}: cannot import it ({exc})") from None
    if not (inspect.isclass(obj) and issubclass(obj, BaseEstimator)):
        kind = "a module" if inspect.ismodule(obj) else f"a {type(obj).__name__}"
        raise InputError(f"model.estimator {path!r}: {kind}, not a scikit-learn estimator class "
                         "(a subclass of sklearn.base.BaseEstimator, e.g. "
                         "sklearn.ensemble.HistGradientBoostingClassifier or xgboost.XGBClassifier)")
    return obj


def new_estimator(path: str, modules: str = DEFAULT_ESTIMATOR_MODULES) -> BaseEstimator:
    """A fresh instance, with the class's defaults, of the estimator class `path` names."""
    cls = resolve(path, modules)
    try:
        est = cls()
    except (TypeError, ValueError) as exc:  # abstract, or takes required arguments (a Pipeline)
        raise InputError(f"model.estimator {path!r}: cannot be created without arguments ({exc})") \
            from None
    if not hasattr(est, "fit"):
        raise InputError(f"model.estimator {path!r}: not a scikit-learn estimator (it has no fit)")
    return est


def _with_params(est: BaseEstimator, params: dict[str, Any], field: str) -> BaseEstimator:
    known = est.get_params()
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"{field}: {type(est).__name__} has no parameter(s) {unknown}; it takes "
                         f"{sorted(k for k in known if '__' not in k)}")
    est = clone(est).set_params(**params)
    # scikit-learn's own constraint check; xgboost inherits the method without the table it reads.
    validate = getattr(est, "_validate_params", None) if hasattr(est, "_parameter_constraints") else None
    if validate is not None:
        try:
            validate()
        except (ValueError, TypeError) as exc:
            raise InputError(f"{field}: {exc}") from None
    return est


def check_model(model: ModelSpec, modules: str = DEFAULT_ESTIMATOR_MODULES) -> BaseEstimator:
    """Every error a spec's model section can hold, before any cluster work starts."""
    if model.num_workers and not model.estimator.startswith("xgboost."):
        raise InputError(f"model.num_workers: data-parallel training needs an xgboost estimator, not "
                         f"{model.estimator!r}; drop num_workers to train it on one worker")
    est = new_estimator(model.estimator, modules)
    if model.task == "classification" and is_regressor(est):
        raise InputError(f"model.estimator {model.estimator!r} is a regressor but model.task is "
                         "'classification'")
    if model.task == "regression" and is_classifier(est):
        raise InputError(f"model.estimator {model.estimator!r} is a classifier but model.task is "
                         "'regression'")
    _with_params(est, model.params, "model.params")
    if model.search:
        for name, dim in model.search.space.items():
            if dim.type in ("choice", "grid"):
                values = dim.values or []
            elif dim.type in ("randint", "qrandint"):
                values = [int(dim.low or 0), int(dim.high or 0) - 1]
            else:
                values = [dim.low, dim.high]
            for value in values:
                _with_params(est, {**model.params, name: value}, f"model.search.space.{name}={value!r}")
        if model.search.scheduler == "asha":
            kind = iterative_kind(est)
            if kind is None:
                raise InputError(f"model.search.scheduler 'asha' needs an iterative estimator "
                                 f"(warm_start trees or partial_fit); {model.estimator} is neither: "
                                 "use scheduler 'fifo'")
            if model.search.cv_folds:
                raise InputError("model.search.scheduler 'asha' reports on a holdout: drop cv_folds")
            grow = kind[1] or "max_iter"
            if grow in model.search.space:
                raise InputError(f"model.search.space.{grow}: with scheduler 'asha' the iterations are "
                                 f"set by search.max_iterations, not searched")
    return est


# Estimators whose `max_iter` counts iterations in total under warm_start (each fit adds trees
# up to it). For MLP, SGD or LogisticRegression `max_iter` counts per fit call instead, so
# growing it would train more than was reported: those go through partial_fit (or not at all).
_TOTAL_MAX_ITER = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


def iterative_kind(est: BaseEstimator) -> tuple[Iterative, str | None] | None:
    """How an estimator can report per iteration (for ASHA), and which parameter grows."""
    params = est.get_params()
    if "warm_start" in params:
        if "n_estimators" in params:
            return "warm_start", "n_estimators"
        if "max_iter" in params and type(est).__name__ in _TOTAL_MAX_ITER:
            return "warm_start", "max_iter"
    if hasattr(est, "partial_fit"):
        return "partial_fit", None
    return None


def _as_object(frame: pd.DataFrame) -> pd.DataFrame:
    """Categoricals as plain objects with NaN for missing: scikit-learn's imputers and encoders
    do not accept pandas' string / boolean extension dtypes with pd.NA."""
    return frame.astype(object).where(frame.notna(), np.nan)


def column_kinds(X: pd.DataFrame) -> tuple[list[str], list[str]]:
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])
               and not pd.api.types.is_bool_dtype(X[c])]
    return numeric, [c for c in X.columns if c not in numeric]


def preprocessor(model: ModelSpec, X: pd.DataFrame) -> ColumnTransformer:
    numeric, categorical = column_kinds(X)
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if model.scale_numeric:
        num_steps.append(("scale", StandardScaler()))
    encoder = (OneHotEncoder(handle_unknown="ignore", sparse_output=False)
               if model.categorical_encoding == "onehot"
               else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                   encoded_missing_value=-1))
    cat = Pipeline([("as_object", FunctionTransformer(_as_object, feature_names_out="one-to-one")),
                    ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                    ("encode", encoder)])
    return ColumnTransformer([("numeric", Pipeline(num_steps), numeric), ("categorical", cat, categorical)],
                             remainder="drop", verbose_feature_names_out=False)


def build_estimator(model: ModelSpec, X: pd.DataFrame, params: dict[str, Any] | None = None,
                    modules: str = DEFAULT_ESTIMATOR_MODULES) -> Pipeline:
    """The full model: preprocessing for X's columns, then the estimator with `params`
    (the spec's fixed params, overridden by a tuned config). The seed goes to random_state."""
    est = new_estimator(model.estimator, modules)
    merged = {**model.params, **(params or {})}
    if "random_state" in est.get_params() and "random_state" not in merged:
        merged["random_state"] = model.seed
    est = _with_params(est, merged, "model.params")
    return Pipeline([("preprocess", preprocessor(model, X)), (MODEL_STEP, est)])
