"""Small real models for the champion tests: a fitted scikit-learn model logged to a real
MLflow run (SQLite tracking database under a throwaway PLATFORM_HOME), registered, and
recorded in the metadata store the way the pipeline records it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from mlplatform.artifacts import Evaluation, ModelVersion, TrainedModel
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings
from mlplatform.spec import PipelineSpec

PIPELINE = "p"
SPEC = PipelineSpec.model_validate(
    {"name": PIPELINE, "source": {"path": "/d", "entity_column": "id", "timestamp_column": "t"}})


def home_settings(home: Path) -> Settings:
    return load_settings(env={"PLATFORM_HOME": str(home)})


@cache
def _initialised_mlflow_db() -> Path:
    """An MLflow tracking database MLflow has created (its migrations take seconds), once."""
    home = Path(tempfile.mkdtemp(prefix="mlp-mlflow-template-"))
    Services(home_settings(home)).models  # noqa: B018 - opening it creates the database
    return home / "mlflow.db"


def quick_home(home: Path) -> Settings:
    """A new home whose MLflow database starts as a copy of an empty, initialised one: what a
    fresh home is after its first open, without paying for MLflow's migrations per test."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(_initialised_mlflow_db(), home / "mlflow.db")
    return home_settings(home)


@contextmanager
def _declared_requirements() -> Iterator[None]:
    """MLflow infers a model's pip requirements in a subprocess (about 2 s a model); these
    tests are not about the requirements file, so it is declared instead."""
    import mlflow.models

    real = mlflow.models.infer_pip_requirements
    mlflow.models.infer_pip_requirements = lambda *args, **kwargs: ["scikit-learn"]
    try:
        yield
    finally:
        mlflow.models.infer_pip_requirements = real


def trained_model(services: Services, name: str, seed: int) -> TrainedModel:
    """A tiny LogisticRegression in a finished MLflow run, as the train step records it."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    y = (X["a"] + rng.normal(scale=0.5, size=40) > 0).astype(int)
    model = LogisticRegression(random_state=seed).fit(X, y)
    reg = services.models
    run_id = reg.start_run(PIPELINE, f"model-{seed}", {"mlplatform.model_name": name})
    with _declared_requirements():
        sha = reg.log_model(run_id, model, X.head(5))
    reg.end_run(run_id)
    return TrainedModel(uri=f"runs:/{run_id}/model", content_hash=sha, model_name=name, mlflow_run_id=run_id,
                        seed=seed, estimator="sklearn.linear_model.LogisticRegression", training_set="/ts",
                        training_set_id=0, model_spec={}, evaluation_spec={})


def registered_version(services: Services, name: str, seed: int) -> ModelVersion:
    """A trained model registered as a version, with its sha256 recorded (what loads check)."""
    trained = trained_model(services, name, seed)
    version, _ = services.models.register(name, trained.mlflow_run_id, tags={"gate.decision": "passed"})
    return services.metadata.put(ModelVersion(
        uri=f"models:/{name}/{version}", content_hash=trained.content_hash, name=name, version=version,
        passed=True, mlflow_run_id=trained.mlflow_run_id))


def evaluation(trained: TrainedModel, run_id: str, *, passed: bool,
               champion_version: str | None) -> Evaluation:
    reason = "accepted: better than the champion" if passed else "rejected: roc_auc 0.5 < 0.6"
    return Evaluation(uri=f"evaluation://{PIPELINE}/{run_id}/{trained.model_name}",
                      model_name=trained.model_name, model_uri=trained.uri, passed=passed, reason=reason,
                      metric="roc_auc", rows=10, challenger={"roc_auc": 0.9 if passed else 0.5},
                      champion_version=champion_version, checks=[])


def record_trained_and_evaluated(services: Services, run_id: str, trained: list[TrainedModel],
                                 evaluations: list[Evaluation]) -> None:
    """A run whose train and evaluate steps completed: what register and promote consume."""
    store = services.metadata
    store.start_run(PIPELINE, run_id, {})
    for step, arts in (("train", trained), ("evaluate", evaluations)):
        ex = store.start_execution(run_id, step, {})
        for art in arts:
            store.link(ex, store.put(art).id or 0, "OUTPUT")
        store.finish_execution(ex, "COMPLETE")
