"""Retrain a registered version from what was recorded, and compare its metrics.

Everything comes from the records: the training set (refused if its sha256 changed), the
model and evaluation sections of the spec as they were, the tuned configuration and the
seed. The refit runs in this process with the same code the final fit ran on the
cluster, so a deterministic estimator gives the same holdout metrics to the last digit.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from mlplatform.errors import PlatformError
from mlplatform.evaluation.metrics import evaluate_model
from mlplatform.registry.metadata import MetadataStore
from mlplatform.registry.models import MODEL_KIND, VERSION_KIND, ModelRegistry
from mlplatform.settings import Settings
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


def reproduce(settings: Settings, name: str, version: str) -> Reproduction:
    store = MetadataStore(settings.metadata_url)
    reg = ModelRegistry(settings, store)
    info = reg.version(name, version)  # a clear error for an unknown name or version
    ver = store.find_artifact(f"models:/{name}/{version}", VERSION_KIND)
    run_id = (ver.properties.get("mlflow_run_id") if ver else None) or info.run_id
    art = store.find_artifact(f"runs:/{run_id}/model", MODEL_KIND)
    if art is None or "model_spec" not in art.properties:
        raise PlatformError(f"model {name} v{version}: no training record in the metadata store "
                            f"({settings.metadata_url}); it cannot be reproduced from here")
    p = art.properties
    model = ModelSpec.model_validate(p["model_spec"])
    ev = EvaluationSpec.model_validate(p["evaluation_spec"])
    source = store.artifact(int(p["training_set_id"]))
    if source is None:
        raise PlatformError(f"model {name} v{version}: its training set (artifact "
                            f"{p['training_set_id']}) is missing from the metadata store")
    prepared = prepare(model, ev, source)
    seg = p.get("segment") or ""
    X, y = prepared.train[seg]
    fitted = build_estimator(model, X, p.get("config") or {}, settings.estimator_modules).fit(X, y)
    Xt, yt, _ = prepared.test[seg]
    got = evaluate_model(model.task, fitted, Xt, yt)
    recorded: dict[str, float] = p.get("holdout") or {}
    diffs = []
    for metric in sorted(set(recorded) | set(got)):
        a, b = recorded.get(metric), got.get(metric)
        both = a is not None and b is not None and not (math.isnan(a) or math.isnan(b))
        diffs.append(MetricDiff(metric=metric, recorded=a, reproduced=b, diff=(b - a) if both else None))
    worst = max((abs(d.diff) for d in diffs if d.diff is not None), default=0.0)
    return Reproduction(name=name, version=str(version), mlflow_run_id=str(run_id), training_set=source.uri,
                        config=p.get("config") or {}, seed=model.seed, metrics=diffs, max_abs_diff=worst,
                        identical=worst == 0.0)
