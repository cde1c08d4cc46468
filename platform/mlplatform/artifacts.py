"""The contracts between steps: one pydantic model per kind of artifact.

A step writes these and the next step reads them back, typed, through
`StepContext.upstream(Model)` or the metadata store's typed queries; nothing reads
another stage's properties by string key. In the metadata store an artifact is a row
(uri, kind, content hash) with its other fields as JSON properties; `from_record`
turns a row back into its model and, when the row does not fit the contract (an old
run, a step that changed), fails naming the run, the step and the field.

This module is the bottom layer: it imports nothing of the platform but its errors,
so every stage may depend on it and no stage needs to import another stage's step
module for a kind constant.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlplatform.errors import PlatformError

_BASE_FIELDS = ("id", "uri", "content_hash")


class ContractError(PlatformError):
    """A recorded artifact does not match the contract its reader expects."""


class ArtifactModel(BaseModel):
    """Fields every artifact has; subclasses add their typed properties."""

    model_config = ConfigDict(extra="ignore")

    kind: ClassVar[str]
    id: int | None = Field(None, description="The metadata store's id, once recorded.")
    uri: str
    content_hash: str | None = None

    def properties(self) -> dict[str, Any]:
        """What goes into the metadata store's JSON properties column."""
        return self.model_dump(mode="json", by_alias=True, exclude=set(_BASE_FIELDS))

    @classmethod
    def from_record(cls: type[A], *, id: int | None, uri: str, kind: str, content_hash: str | None,
                    properties: dict[str, Any], where: str = "") -> A:
        if kind != cls.kind:
            raise ContractError(f"{where or 'artifact'} {uri}: is a {kind!r} artifact, expected "
                                f"{cls.kind!r}")
        try:
            return cls.model_validate({**properties, "id": id, "uri": uri, "content_hash": content_hash})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ContractError(f"{where or 'artifact'} {cls.kind} {uri} (id {id}) does not match the "
                                f"contract: {problems}") from None


A = TypeVar("A", bound=ArtifactModel)


# --- data --------------------------------------------------------------------------------


class SourceFile(ArtifactModel):
    """A batch file the ingest step consumed (identified by its content hash)."""

    kind: ClassVar[str] = "source_file"
    size_bytes: int | None = None


class RejectedSourceFile(ArtifactModel):
    """A batch file that could not be read: set aside, not retried until its content changes."""

    kind: ClassVar[str] = "rejected_source_file"
    size_bytes: int | None = None
    reason: str


class Snapshot(ArtifactModel):
    """An ingested batch: an immutable, content-addressed Parquet copy of new source files."""

    kind: ClassVar[str] = "dataset_snapshot"
    rows: int
    columns: list[str]
    files: list[str]
    format: str = "parquet"


class InferredSchema(ArtifactModel):
    """A schema the validate step inferred (no schema in the spec) and recorded for review."""

    kind: ClassVar[str] = "schema"
    inferred: bool = True
    columns: int


class Statistics(ArtifactModel):
    """Exact statistics of one validated batch (the drift reference for the next ones)."""

    kind: ClassVar[str] = "statistics"
    snapshot: str
    rows: int


class ValidationReport(ArtifactModel):
    kind: ClassVar[str] = "validation_report"
    html: str
    json_: str | None = Field(None, alias="json")
    drift_reference: str | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Quarantine(ArtifactModel):
    """Rows that failed row-level checks, with a `_reason` column."""

    kind: ClassVar[str] = "quarantine"
    rows: int


class RejectedBatch(ArtifactModel):
    """A snapshot the validate step stopped: the reasons, and its rows (kept in the snapshot)."""

    kind: ClassVar[str] = "rejected_batch"
    rows: int
    reasons: list[str]


class ValidatedBatch(ArtifactModel):
    """The rows of a snapshot that passed validation: what features and training read."""

    kind: ClassVar[str] = "validated_snapshot"
    rows: int
    snapshot: str


# --- features ----------------------------------------------------------------------------


class FeatureRows(ArtifactModel):
    """One write of a feature view to the offline store (one batch, one view version)."""

    kind: ClassVar[str] = "feature_rows"
    view: str
    version: str
    rows: int
    write_id: str
    dates: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    snapshot: str


class FeatureViewFields(BaseModel):
    """A feature view with every default resolved (the feature store's `FeatureView` adds its
    behaviour); recorded as it is, so the catalog can list views without the spec at hand."""

    pipeline: str
    name: str
    entity: str
    timestamp_column: str
    created_timestamp_column: str | None = None
    ttl_s: int
    transformation: str | None = None
    features: list[str] = Field(description="Every output feature, aggregations included.")
    spec: dict[str, Any]
    version: str


class FeatureViewDefinition(ArtifactModel, FeatureViewFields):
    """A feature view's resolved definition and version, as the feature catalog lists it."""

    kind: ClassVar[str] = "feature_view"


class TrainingSet(ArtifactModel):
    """Label rows joined point-in-time with a feature service, written as Parquet."""

    kind: ClassVar[str] = "training_set"
    rows: int
    service: str
    view_versions: dict[str, str] = Field(default_factory=dict)
    features: list[str]
    label: str | None = None
    timestamp: str | None = None
    entity: str | None = None
    report: str
    service_hash: str
    statistics: str | None = Field(
        None, description="URI of the training set's statistics: the drift reference once its model "
                          "is champion.")


# --- models ------------------------------------------------------------------------------


class TrainedModel(ArtifactModel):
    """A fitted model in an MLflow run (runs:/<run>/model); content_hash is its files' sha256."""

    kind: ClassVar[str] = "model"
    model_name: str
    segment: str | None = None
    mlflow_run_id: str
    config: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    estimator: str
    holdout: dict[str, float | None] = Field(default_factory=dict)
    training_set: str
    training_set_sha256: str | None = None
    training_set_id: int
    snapshots: list[str] = Field(default_factory=list)
    duration_s: float | None = None
    code_version: str | None = None
    search_best: float | None = None
    model_spec: dict[str, Any]
    evaluation_spec: dict[str, Any]


class GateCheck(BaseModel):
    metric: str
    rule: str
    challenger: float | None
    champion: float | None = None
    passed: bool
    skipped: bool = False
    detail: str


class SliceResult(BaseModel):
    column: str
    value: str
    rows: int
    challenger: float | None
    champion: float | None = None
    regression: float | None = Field(None, description="How much worse the challenger is (>0: worse).")
    gated: bool
    passed: bool


class GateDecision(BaseModel):
    """The champion/challenger comparison: every number and the reason."""

    passed: bool
    reason: str
    metric: str
    rows: int
    challenger: dict[str, float | None]
    champion: dict[str, float | None] | None = None
    champion_version: str | None = None
    checks: list[GateCheck]
    slices: list[SliceResult] = Field(default_factory=list)


class Evaluation(ArtifactModel, GateDecision):
    """The gate decision for one trained model, as the evaluate step recorded it."""

    kind: ClassVar[str] = "evaluation"
    model_name: str
    model_uri: str


class ModelVersion(ArtifactModel):
    """A registered version (models:/<name>/<version>); content_hash is the model files' sha256."""

    kind: ClassVar[str] = "model_version"
    name: str
    version: str
    passed: bool
    mlflow_run_id: str
    segment: str | None = None
    training_set_id: int | None = None


class ChampionChange(ArtifactModel):
    """A change of a model's champion the promote step made (champion://<name>/<change id>): a row
    of the metadata store's champion history, which is who is champion; MLflow's alias mirrors it."""

    kind: ClassVar[str] = "champion_change"
    name: str
    version: str
    previous_version: str | None = None
    change_id: int
    run_id: str | None = None
    segment: str | None = None


# --- serving -------------------------------------------------------------------------------


class Deployment(ArtifactModel):
    """A change of what a pipeline serves (serving://<pipeline>/<generation>): the live versions,
    their weights and the infra validation that let a new version take traffic."""

    kind: ClassVar[str] = "deployment"
    pipeline: str
    model_name: str
    generation: int
    champion: str | None = None
    weights: dict[str, int]
    shadow: str | None = None
    added: list[str] = Field(default_factory=list)
    infra: list[dict[str, Any]] = Field(default_factory=list)
