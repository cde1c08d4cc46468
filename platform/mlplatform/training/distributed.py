"""Data-parallel xgboost training on Ray Train, for a spec that sets `model.num_workers`.

The single-node path (training/search.py) fits a whole model inside one Tune trial: right
while the training set fits one worker's memory and CPUs. Past that, xgboost itself can
train data-parallel (each worker builds histograms on its shard, rabit all-reduces them),
and Ray Train's XGBoostTrainer runs that: the worker group, the rabit tracker, a shard of a
Ray Dataset per worker, checkpoints and FailureConfig retries. Hyperparameter search stays
on Tune; this replaces only the final fit.

The platform's preprocessing (estimators.preprocessor) is fitted on the driver, which holds
the frame anyway; workers get numeric shards. The result is the same kind of artifact as the
single-node path: a scikit-learn Pipeline of the fitted ColumnTransformer and an xgboost
scikit-learn estimator wrapping the trained booster, so it takes raw feature rows.

Ray 2.60 runs Train V2: a failed worker group restarts up to `max_failures` times and the
training function resumes from `ray.train.get_checkpoint()`; running again with the same
RunConfig(name, storage_path) resumes that run (so `name` must be unique per fit).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.pipeline import Pipeline

from mlplatform.errors import InputError, PlatformError
from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES
from mlplatform.spec import ModelSpec
from mlplatform.training.estimators import MODEL_STEP, new_estimator, preprocessor
from mlplatform.training.search import TuneStorage, as_tune_storage

LABEL = "__label__"
_DATASET = "train"
# Checkpoints per run (a retried worker group resumes from the latest). Each report costs up to
# one controller poll (2 s): Train V2's per-worker result queue holds one report and the
# controller drains it on its health-check interval, so reports are kept few.
_CHECKPOINTS = 5


def _require_xgboost(model: ModelSpec) -> None:
    if not model.estimator.startswith("xgboost."):
        raise InputError(f"model.num_workers: distributed training needs an xgboost estimator "
                         f"(xgboost.XGBClassifier, xgboost.XGBRegressor), not {model.estimator!r}; "
                         "drop num_workers to train it on one worker")
    if importlib.util.find_spec("xgboost") is None:
        raise InputError(f"model.estimator {model.estimator!r}: xgboost is not installed "
                         "(pip install 'mlplatform[xgboost]', or xgboost-cpu / xgboost)")


def _estimator(model: ModelSpec, config: dict[str, Any], modules: str) -> Any:
    """The xgboost sklearn estimator with the spec's params, the config and the seed.

    Not estimators.build_estimator: its scikit-learn parameter validation calls
    `_validate_params`, which xgboost models inherit without `_parameter_constraints`
    (AttributeError), so the names are checked here against get_params instead."""
    import xgboost

    est = new_estimator(model.estimator, modules)
    if not isinstance(est, xgboost.XGBModel):
        raise InputError(f"model.estimator {model.estimator!r} is not an xgboost scikit-learn model")
    if (model.task == "classification") != is_classifier(est):
        raise InputError(f"model.estimator {model.estimator!r} does not fit model.task {model.task!r}")
    params = {"random_state": model.seed, **model.params, **config}
    unknown = sorted(set(params) - set(est.get_params()))
    if unknown:
        raise InputError(f"model.params: {type(est).__name__} has no parameter(s) {unknown}")
    return est.set_params(**params)


def _labels(model: ModelSpec, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as float32 for a DMatrix, and the number of classes (0 for regression)."""
    y = np.asarray(y)
    if model.task == "regression":
        return y.astype(np.float32), 0
    classes = np.unique(y)
    if len(classes) < 2:
        raise InputError(f"classification needs at least two classes; the labels hold {classes.tolist()}")
    if not np.array_equal(classes, np.arange(len(classes))):
        raise InputError(f"xgboost needs class labels 0..{len(classes) - 1}; the labels hold "
                         f"{classes.tolist()[:10]}")
    return y.astype(np.float32), len(classes)


def booster_params(est: Any, task: str, n_classes: int, explicit: dict[str, Any],
                   threads: int = 1) -> tuple[dict[str, Any], int]:
    """xgboost.train parameters and boosting rounds from a configured xgboost sklearn estimator
    (its own translation of n_estimators, learning_rate, random_state... to the native names).
    The objective follows the task unless the spec sets one."""
    params = {k: v for k, v in est.get_xgb_params().items() if v is not None}
    params.setdefault("n_jobs", threads)  # the worker's CPUs
    if "objective" not in explicit:
        if task == "regression":
            params["objective"] = "reg:squarederror"
        elif n_classes > 2:
            params["objective"] = "multi:softprob"
        else:
            params["objective"] = "binary:logistic"
    if task == "classification" and n_classes > 2:
        params["num_class"] = n_classes
    return params, int(est.get_num_boosting_rounds())


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: its shard as a DMatrix, xgboost.train in the rabit context Ray
    Train opened, a checkpoint every `checkpoint_every` rounds (rank 0 writes it)."""
    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    class CheckpointsOnly(RayTrainReportCallback):
        """Reports with its checkpoints only: the stock callback also reports metrics after
        every round, and each report waits for the controller (~2 s a round in Ray 2.60)."""

        def _report_metrics(self, report_dict: dict) -> None:
            pass

    shard = ray.train.get_dataset_shard(_DATASET)
    frame = pd.concat(list(shard.iter_batches(batch_format="pandas")), ignore_index=True)
    dtrain = xgboost.DMatrix(frame[config["features"]].to_numpy(np.float32),
                             label=frame[LABEL].to_numpy(np.float32))
    rounds, start = config["num_boost_round"], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a retried worker group, or a re-run of the same RunConfig name
        start = RayTrainReportCallback.get_model(checkpoint)
        rounds = max(0, rounds - start.num_boosted_rounds())
    xgboost.train(config["params"], dtrain, num_boost_round=rounds, xgb_model=start,
                  evals=[(dtrain, "train")], verbose_eval=False,
                  callbacks=[CheckpointsOnly(frequency=config["checkpoint_every"])])


def fit_distributed(model: ModelSpec, X: pd.DataFrame, y: np.ndarray, config: dict[str, Any], *,
                    storage_path: TuneStorage | str, name: str, modules: str = DEFAULT_ESTIMATOR_MODULES,
                    max_failures: int = 1, cpus_per_worker: float = 1.0) -> Pipeline:
    """Train `model.estimator` with `{**model.params, **config}` on `model.num_workers` Ray Train
    workers; the fitted Pipeline (preprocess, model). The run and its checkpoints live under
    `storage_path`/`name`."""
    _require_xgboost(model)
    est = _estimator(model, config, modules)
    labels, n_classes = _labels(model, y)
    params, rounds = booster_params(est, model.task, n_classes, {**model.params, **config},
                                    threads=max(1, int(cpus_per_worker)))
    workers = model.num_workers or 1

    import ray
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.xgboost import RayTrainReportCallback, XGBoostTrainer

    cpus = float(ray.cluster_resources().get("CPU", 0))
    if workers * cpus_per_worker > cpus:
        raise PlatformError(f"model.num_workers={workers} x {cpus_per_worker} CPU does not fit the "
                            f"cluster's {cpus:g} CPUs")
    pre = preprocessor(model, X)
    Xt = np.asarray(pre.fit(X, y).transform(X), dtype=np.float32)
    features = [f"f{i}" for i in range(Xt.shape[1])]
    frame = pd.DataFrame(Xt, columns=features)
    frame[LABEL] = labels
    trainer = XGBoostTrainer(
        _train_loop,
        train_loop_config={"params": params, "num_boost_round": rounds, "features": features,
                           "checkpoint_every": max(1, rounds // _CHECKPOINTS)},
        datasets={_DATASET: ray.data.from_pandas(frame)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, **as_tune_storage(storage_path).run_config(),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise PlatformError(f"distributed xgboost training ({workers} workers) failed: {exc}") from exc
    if result.checkpoint is None:
        raise PlatformError("distributed xgboost training finished without a checkpoint")
    booster = RayTrainReportCallback.get_model(result.checkpoint)
    est.load_model(bytearray(booster.save_raw("ubj")))
    return Pipeline([("preprocess", pre), (MODEL_STEP, est)])
