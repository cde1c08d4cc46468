"""The model registry on MLflow, with the platform's own integrity check.

MLflow holds runs, model versions and the `champion` / `challenger` aliases; the
platform's metadata store holds each model artifact's sha256, and every load compares
the downloaded files against it, so a model changed behind the registry's back (a
tampered or half-copied artifact) is refused instead of served. Models are saved with
cloudpickle (the preprocessing uses a module-level function skops would not trust); the
hash check is what makes loading a pickle safe here.

All writes go through one client in one process (the driver of a pipeline run): SQLite
serialises writers and a fresh database raced in schema migration when many processes
opened it at once (shared/REFERENCES.md), so the database is created once, up front.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mlplatform import storage
from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.store import MetadataStore
from mlplatform.settings import Settings

MODEL_KIND = "model"  # a trained model in an MLflow run: runs:/<run>/model
VERSION_KIND = "model_version"  # a registered version: models:/<name>/<version>
CHAMPION, CHALLENGER = "champion", "challenger"
_IGNORED = {"registered_model_meta"}  # MLflow adds it to a registered model's download
_READY: set[str] = set()
_LOCK = threading.Lock()


class ModelVersionInfo(BaseModel):
    name: str
    version: str
    run_id: str | None
    aliases: list[str] = Field(default_factory=list)
    created_at: str
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    sha256: str | None = None


def dir_sha256(folder: str | Path) -> str:
    """One digest over every file's relative path and bytes (MLflow's own bookkeeping aside)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _IGNORED):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _file_uri(location: str) -> str:
    return location if "://" in location else Path(location).resolve().as_uri()


class ModelRegistry:
    """MLflow tracking + registry for one platform installation."""

    def __init__(self, settings: Settings, store: MetadataStore | None = None):
        import mlflow
        from mlflow import MlflowClient

        # Download progress bars are noise in job logs and CLI output.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.settings = settings
        self.uri = settings.mlflow_tracking_uri
        self.store = store or MetadataStore(settings.metadata_url)
        self._ensure_db()
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)

    def _ensure_db(self) -> None:
        """Create the tracking database once, from one thread, before anything fans out."""
        with _LOCK:
            if self.uri in _READY:
                return
            if self.uri.startswith("sqlite:///"):
                Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            from mlflow import MlflowClient

            try:
                MlflowClient(self.uri).search_experiments(max_results=1)
            except Exception as exc:  # noqa: BLE001 - the store is unusable: say which and why
                raise PlatformError(f"MLflow tracking store {self.uri} cannot be opened: {exc}") from None
            _READY.add(self.uri)

    # -- runs -------------------------------------------------------------------------

    def experiment_id(self, pipeline: str) -> str:
        exp = self.client.get_experiment_by_name(pipeline)
        if exp is not None:
            return exp.experiment_id
        location = storage.join(self.settings.storage_uri, "mlflow", pipeline)
        try:
            return self.client.create_experiment(pipeline, artifact_location=_file_uri(location))
        except Exception:  # another writer created it between the two calls
            exp = self.client.get_experiment_by_name(pipeline)
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(self, pipeline: str, name: str, tags: dict[str, str],
                  parent_run_id: str | None = None) -> str:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        return self.client.create_run(self.experiment_id(pipeline), run_name=name, tags=all_tags).info.run_id

    def log(self, run_id: str, *, params: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, Any] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()
                     if v is not None and v == v],
            params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()])

    def log_json(self, run_id: str, obj: Any, path: str) -> None:
        self.client.log_dict(run_id, obj, path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def log_model(self, run_id: str, model: Any, sample: Any) -> str:
        """Save `model` into the run (artifact path `model`); return the sha256 of its files."""
        import mlflow.sklearn
        from mlflow.models import infer_signature

        with tempfile.TemporaryDirectory(prefix="mlp-model-") as tmp:
            local = os.path.join(tmp, "model")
            signature = infer_signature(sample, model.predict(sample))
            mlflow.sklearn.save_model(model, local, serialization_format="cloudpickle",
                                      signature=signature)
            sha = dir_sha256(local)
            self.client.log_artifacts(run_id, local, "model")
        return sha

    def load_run_model(self, run_id: str, sha256: str) -> Any:
        return self._load_verified(f"runs:/{run_id}/model", sha256, f"run {run_id}")

    # -- the registry -----------------------------------------------------------------

    def register(self, name: str, run_id: str, tags: dict[str, str]) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description="Registered by mlplatform.")
            except MlflowException:
                pass  # created by a concurrent writer
        mv = self.client.create_model_version(name, f"runs:/{run_id}/model", run_id, tags=tags)
        return str(mv.version)

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(name, version, k, str(v))

    def alias(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)
        if alias == CHAMPION:
            history = self.champion_history(name)
            if not history or history[-1] != version:
                history.append(version)
            self.client.set_registered_model_tag(name, "mlplatform.champion_history", json.dumps(history))

    def champion_history(self, name: str) -> list[str]:
        tags = self.client.get_registered_model(name).tags or {}
        return list(json.loads(tags.get("mlplatform.champion_history", "[]")))

    def rollback(self, name: str) -> tuple[str, str]:
        """Make the previous champion the champion again: (from, to)."""
        if name not in self.names():
            raise InputError(f"model {name!r} is not registered; registered models: {self.names() or 'none'}")
        history = self.champion_history(name)
        current = self.alias(name, CHAMPION)
        if current is None or len(history) < 2:
            raise InputError(f"model {name!r} has no earlier champion to roll back to "
                             f"(champion history: {history or 'empty'})")
        history.pop()
        target = history[-1]
        self.load(name, target)  # refuse a tampered target before it serves
        self.client.set_registered_model_alias(name, CHAMPION, target)
        self.client.set_registered_model_tag(name, "mlplatform.champion_history", json.dumps(history))
        return current, target

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def version(self, name: str, version: str) -> ModelVersionInfo:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, str(version))
        except MlflowException:
            known = [v.version for v in self.versions(name)] if name in self.names() else []
            raise InputError(f"model {name!r} version {version!r} does not exist"
                             + (f"; versions are {known}" if known else
                                f"; registered models are {self.names()}")) from None
        return self._info(mv)

    def versions(self, name: str) -> list[ModelVersionInfo]:
        found = self.client.search_model_versions(f"name = '{name}'")
        # search_model_versions leaves aliases out; the registered model has them all.
        aliases: dict[str, list[str]] = {}
        for alias, version in (self.client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        infos = [self._info(mv) for mv in found]
        for info in infos:
            info.aliases = sorted(set(info.aliases) | set(aliases.get(info.version, [])))
        return sorted(infos, key=lambda v: int(v.version))

    def _info(self, mv: Any) -> ModelVersionInfo:
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            run = self.client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        art = self.store.find_artifact(f"models:/{mv.name}/{mv.version}", VERSION_KIND)
        return ModelVersionInfo(
            name=mv.name, version=str(mv.version), run_id=mv.run_id, aliases=list(mv.aliases or []),
            created_at=dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(),
            tags=dict(mv.tags or {}), metrics=metrics, params=params,
            sha256=art.content_hash if art else None)

    def load(self, name: str, version: str) -> Any:
        """A registered version, after checking its files against the recorded sha256."""
        art = self.store.find_artifact(f"models:/{name}/{version}", VERSION_KIND)
        if art is None:  # registered, but the step died before recording it: the train-time record
            run_id = self.client.get_model_version(name, str(version)).run_id
            art = self.store.find_artifact(f"runs:/{run_id}/model", MODEL_KIND)
        if art is None or not art.content_hash:
            raise PlatformError(f"model {name} v{version}: no sha256 recorded in the metadata store; "
                                "refusing to load an artifact the platform did not register")
        return self._load_verified(f"models:/{name}/{version}", art.content_hash, f"{name} v{version}")

    def _load_verified(self, uri: str, sha256: str, what: str) -> Any:
        import mlflow.artifacts
        import mlflow.sklearn

        with tempfile.TemporaryDirectory(prefix="mlp-load-") as tmp:
            local = mlflow.artifacts.download_artifacts(uri, dst_path=tmp, tracking_uri=self.uri)
            got = dir_sha256(local)
            if got != sha256:
                raise PlatformError(f"model {what}: artifact sha256 {got[:16]} does not match the "
                                    f"recorded {sha256[:16]}; the files at {uri} were changed after "
                                    "registration: refusing to load them")
            return mlflow.sklearn.load_model(local)
