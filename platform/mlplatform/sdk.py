"""The Python SDK for notebooks and scripts: the production platform's runs, features, models,
validation and prediction log, for a data scientist who wants to try something on real data
without a pipeline run (one facade, as Feast's `FeatureStore` is).

    import mlplatform

    platform = mlplatform.connect()          # the same settings as `platformctl`
    demo = platform.pipeline("demo")          # the spec production last applied
    data = demo.training_set()                # the newest training set, sha256-checked
    champion = demo.load_model("champion")    # sha256-checked

Read-only by default: a method that writes (registering a model, promoting one) raises
`ReadOnly` unless the connection was made with `writable=True`, and what it writes carries
the user's name (the run's properties, the MLflow tags, the champion history's actor).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlplatform.errors import InputError, PlatformError
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings
from mlplatform.spec import PipelineSpec

if TYPE_CHECKING:
    import ray.data

    from mlplatform.artifacts import GateDecision, TrainingSet
    from mlplatform.data.validation import ValidationResult
    from mlplatform.features.store import OnlineVector
    from mlplatform.metadata.store import LineageNode, Run, RunDetail
    from mlplatform.models.registry import ModelVersionInfo


class ReadOnly(PlatformError):
    """A write through a connection made without `writable=True`."""


@dataclass
class TrainingData:
    """A training set as the train step splits it: the rows before the holdout (`X`, `y`) and
    the holdout (`X_test`, `y_test`, and `test` with every column, for slices)."""

    artifact: TrainingSet
    frame: pd.DataFrame
    X: pd.DataFrame
    y: Any
    X_test: pd.DataFrame
    y_test: Any
    test: pd.DataFrame


def connect(*, address: str | None = None, writable: bool = False, user: str | None = None,
            env: dict[str, str] | None = None) -> Platform:
    """The platform `platformctl` would talk to here (environment, platform.yaml, defaults)."""
    return Platform(load_settings(env, address=address), writable=writable, user=user)


class Platform:
    def __init__(self, settings: Settings, *, writable: bool = False, user: str | None = None):
        self.settings = settings
        self.services = Services(settings)
        self.writable = writable
        self.user = user or getpass.getuser()

    def pipelines(self) -> list[str]:
        return sorted(self.services.metadata.pipelines())

    def runs(self, pipeline: str) -> list[Run]:
        return self.services.metadata.runs(pipeline)

    def run(self, run_id: str) -> RunDetail:
        found = self.services.metadata.run(run_id)
        if found is None:
            raise InputError(f"run {run_id!r} is not recorded")
        return found

    def lineage(self, artifact_id: int, *, downstream: bool = False) -> list[LineageNode]:
        return self.services.metadata.lineage(artifact_id, "downstream" if downstream else "upstream")

    def pipeline(self, name: str | None = None, *, spec: str | Path | None = None) -> PipelineHandle:
        """One pipeline: by name, with the spec its newest training run (or `apply`) recorded, or
        from a spec file (`spec`), as `platformctl` loads it."""
        if spec is not None:
            from mlplatform.spec_code import load_for

            loaded = load_for(spec, self.settings)
            if name is not None and loaded.name != name:
                raise InputError(f"spec {spec} is pipeline {loaded.name!r}, not {name!r}")
            return PipelineHandle(self, loaded)
        if name is None:
            raise InputError("pipeline(): name a pipeline or a spec file")
        from mlplatform.spec_plan import recorded

        found = recorded(self.services.metadata, name)
        if found is None:
            raise InputError(f"pipeline {name!r} has no recorded spec (it never trained); known "
                             f"pipelines: {self.pipelines()}; or pass spec=PATH")
        return PipelineHandle(self, PipelineSpec.model_validate(found[1].spec))

    def require_writable(self, what: str) -> None:
        if not self.writable:
            raise ReadOnly(f"{what} writes to the production platform: connect with "
                           "mlplatform.connect(writable=True) to do it")


class PipelineHandle:
    """What a notebook does with one pipeline; see the module's docstring."""

    def __init__(self, platform: Platform, spec: PipelineSpec):
        self.platform = platform
        self.spec = spec
        self.name = spec.name

    @property
    def _store(self) -> Any:
        return self.platform.services.metadata

    # -- data and features ---------------------------------------------------------------

    def training_set(self, run_id: str | None = None) -> TrainingData:
        """The newest training set (or `run_id`'s), its bytes checked against the recorded
        sha256, split into training rows and the holdout exactly as the train step splits it."""
        from mlplatform.artifacts import TrainingSet
        from mlplatform.training.trainer import ALL, prepare

        if run_id is not None:
            found = self._store.run_outputs(run_id, TrainingSet)
            art = found[0] if found else None
        else:
            art = self._store.latest(TrainingSet, self.name, step="training_set")
        if art is None:
            raise InputError(f"pipeline {self.name!r}: no training set recorded"
                             + (f" by run {run_id}" if run_id else ""))
        if self.spec.model.segment_column:
            raise InputError(f"pipeline {self.name!r} trains one model per "
                             f"{self.spec.model.segment_column}: the SDK's training_set() splits "
                             "unsegmented pipelines only")
        prepared = prepare(self.spec.model, self.spec.evaluation, art)
        X, y = prepared.train[ALL]
        X_test, y_test, test = prepared.test[ALL]
        from mlplatform.training.data import load_frame

        return TrainingData(art, load_frame(art.uri, art.content_hash), X, y, X_test, y_test, test)

    def get_training_set(self, entity_df: pd.DataFrame,
                         features: str | list[str] | None = None) -> pd.DataFrame:
        """Point-in-time features for your own entity rows (entity, timestamp columns)."""
        store = self.platform.services.feature_store(self.spec)
        try:
            return store.get_training_set(entity_df, features).df
        finally:
            store.close()

    def online_features(self, entities: list[Any],
                        features: str | list[str] | None = None) -> list[OnlineVector]:
        store = self.platform.services.feature_store(self.spec)
        try:
            return store.get_online_features(entities, features)
        finally:
            store.close()

    def validate(self, df: pd.DataFrame) -> ValidationResult:
        """Check a DataFrame against the pipeline's schema (the spec's, else the one it
        recorded), as the validate step checks a batch; writes nothing."""
        import tempfile

        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        from mlplatform.data.reference import recorded_schema
        from mlplatform.data.validation import validate_parquet
        from mlplatform.spec import SchemaSpec

        schema = self.spec.schema_ if isinstance(self.spec.schema_, SchemaSpec) else \
            recorded_schema(self._store, self.name)
        if schema is None:
            raise InputError(f"pipeline {self.name!r} has no schema: neither its spec nor a run recorded one")
        with tempfile.TemporaryDirectory(prefix="mlplatform-sdk-") as tmp:
            path = f"{tmp}/frame.parquet"
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
            return validate_parquet([path], pafs.LocalFileSystem(), schema, local=True)

    def predictions(self, *, since: Any = None, until: Any = None, service: str | None = None,
                    as_ray: bool = False) -> pd.DataFrame | ray.data.Dataset:
        """The prediction log (every served request, its features and outcome columns), as
        pandas or, for more rows than fit in memory, a Ray Dataset."""
        from mlplatform.serving.predictions import predictions_dataset, read_predictions

        svc = service or self.spec.model.feature_service or "all_features"
        uri = self.platform.settings.storage_uri
        if as_ray:
            self.platform.services.connect_ray(allow_private=True)
            return predictions_dataset(uri, self.name, svc, since=since, until=until)
        return read_predictions(uri, self.name, svc, since=since, until=until)

    # -- models --------------------------------------------------------------------------

    def _version(self, version: str) -> str:
        reg = self.platform.services.models
        if version == "champion":
            found = reg.champion(self.name)
        elif not version.isdigit():
            found = reg.alias(self.name, version)
        else:
            found = version
        if found is None:
            raise InputError(f"model {self.name!r} has no {version}")
        return found

    def load_model(self, version: str = "champion") -> Any:
        """A registered version (a number, `champion`, or another alias), its files checked
        against the sha256 recorded when it was registered."""
        return self.platform.services.models.load(self.name, self._version(str(version)))

    def models(self) -> list[ModelVersionInfo]:
        return self.platform.services.models.versions(self.name)

    def evaluate(self, model: Any, data: TrainingData) -> GateDecision:
        """The platform's gate for `model` against the champion, on the same holdout, with the
        spec's thresholds and slices: what the evaluate step would decide."""
        from mlplatform.evaluation.gate import evaluate

        reg = self.platform.services.models
        champion_version = reg.champion(self.name)
        champion = reg.load(self.name, champion_version) if champion_version else None
        return evaluate(self.spec.model, self.spec.evaluation, model, champion, data.X_test, data.y_test,
                        data.test, champion_version)

    def register_challenger(self, model: Any, data: TrainingData, *,
                            note: str = "") -> tuple[str, GateDecision]:
        """Register a model trained in a notebook (writable only): logged to MLflow with its
        holdout metrics, the gate decided on the same holdout as `evaluate`, and the version
        gets the `challenger` alias when it passes (a rollout or `models promote` decides the
        rest). Returns (version, decision)."""
        from mlplatform.sdk_register import register

        self.platform.require_writable("register_challenger")
        return register(self, model, data, self.evaluate(model, data), note=note)

    def promote(self, version: str, *, reason: str = "") -> None:
        """Make a version champion by compare-and-set (writable only), recorded with your name."""
        self.platform.require_writable("promote")
        self.platform.services.models.promote(self.name, self._version(str(version)),
                                              reason=reason or f"promoted in the SDK by {self.platform.user}",
                                              actor=self.platform.user)
