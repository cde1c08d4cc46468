"""Retrain a registered version from what was recorded, and compare its metrics.

Everything comes from the records: the training set (refused if its sha256 changed), the
model and evaluation sections of the spec as they were, the tuned configuration and the
seed. The refit runs in this process with the same code the final fit ran on the
cluster, so a deterministic estimator gives the same holdout metrics to the last digit.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from mlplatform.artifacts import ModelVersion, TrainedModel, TrainingSet
from mlplatform.errors import PlatformError
from mlplatform.evaluation.metrics import evaluate_model
from mlplatform.services import Services
from mlplatform.spec import EvaluationSpec, ModelSpec
from mlplatform.training.estimators import build_estimator
from mlplatform.training.trainer import prepare


class MetricDiff(BaseModel):
    metric: str
    recorded: float | None
    reproduced: float | None
    diff: float | None


class Reproduction(BaseModel):
    name: str
    version: str
    mlflow_run_id: str
    training_set: str
    config: dict
    seed: int
    metrics: list[MetricDiff]
    max_abs_diff: float
    identical: bool


def reproduce(services: Services, name: str, version: str) -> Reproduction:
    store, reg = services.metadata, services.models
    info = reg.version(name, version)  # a clear error for an unknown name or version
    ver = store.find(ModelVersion, f"models:/{name}/{version}")
    run_id = (ver.mlflow_run_id if ver else None) or info.run_id
    art = store.find(TrainedModel, f"runs:/{run_id}/model")
    if art is None:
        raise PlatformError(f"model {name} v{version}: no training record in the metadata store; "
                            "it cannot be reproduced from here")
    model = ModelSpec.model_validate(art.model_spec)
    ev = EvaluationSpec.model_validate(art.evaluation_spec)
    source = store.get(TrainingSet, art.training_set_id)
    if source is None:
        raise PlatformError(f"model {name} v{version}: its training set (artifact "
                            f"{art.training_set_id}) is missing from the metadata store")
    prepared = prepare(model, ev, source)
    seg = art.segment or ""
    X, y = prepared.train[seg]
    fitted = build_estimator(model, X, art.config, services.settings.estimator_modules).fit(X, y)
    Xt, yt, _ = prepared.test[seg]
    got = evaluate_model(model.task, fitted, Xt, yt)
    recorded = art.holdout
    diffs = []
    for metric in sorted(set(recorded) | set(got)):
        a, b = recorded.get(metric), got.get(metric)
        both = a is not None and b is not None and not (math.isnan(a) or math.isnan(b))
        diffs.append(MetricDiff(metric=metric, recorded=a, reproduced=b, diff=(b - a) if both else None))
    worst = max((abs(d.diff) for d in diffs if d.diff is not None), default=0.0)
    return Reproduction(name=name, version=str(version), mlflow_run_id=str(run_id), training_set=source.uri,
                        config=art.config, seed=model.seed, metrics=diffs, max_abs_diff=worst,
                        identical=worst == 0.0)
