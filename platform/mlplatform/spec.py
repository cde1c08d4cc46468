"""Pydantic models of every file a user writes: the pipeline spec and its schema.

Every section the platform implements is typed, with defaults. A value that nothing
implements yet (`validation.quarantine: false`) is an error naming it, not a setting that
is accepted and silently does nothing; the release that implements it adds its model here.
All models forbid unknown keys: a typo is an error with its YAML path, not a silently
ignored setting.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlplatform.rollout.plan import RolloutSpec
from mlplatform.spec_types import Duration, ImportPath, Strict, duration_seconds

__all__ = ["Duration", "ImportPath", "RolloutSpec", "Strict", "duration_seconds"]

# --- source -------------------------------------------------------------------


class SourceSpec(Strict):
    """Where fresh batches land: a directory (or one file) of CSV or Parquet files."""

    path: str = Field(description="Local path or pyarrow filesystem URI (s3://, gs://, file://).")
    format: Literal["csv", "parquet"] = "parquet"
    entity_column: str
    timestamp_column: str
    label_column: str | None = None
    on_unreadable: Literal["skip", "stop"] = Field(
        "skip",
        description="A new file that is empty, unreadable or unparseable, or whose column types "
        "conflict with the other new files: skip (set it aside as a rejected source file with an alert, "
        "ingest the rest, and not try it again until its content changes) or stop (fail the ingest "
        "step, naming the file).")


# --- schema -------------------------------------------------------------------

ColumnType = Literal["int", "float", "bool", "string", "category", "timestamp"]


class ColumnSchema(Strict):
    name: str
    type: ColumnType
    required: bool = True
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    domain: list[str] | None = None
    soft: list[Literal["min", "max", "domain"]] = Field(
        default_factory=list,
        description="Constraints only reported when broken (a shift), never enforced: inference marks "
        "what it derived from data soft; delete an entry to enforce it.")
    max_unseen_fraction: float = Field(0.0, ge=0.0, le=1.0)
    regex: str | None = None
    unique: bool = False
    serving: bool = Field(True, description="False for columns absent at serving time (the label).")

    @model_validator(mode="after")
    def _range(self) -> ColumnSchema:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        unset = [c for c in self.soft if getattr(self, c) is None]
        if unset:
            raise ValueError(f"soft names {unset}, which this column does not set")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        return self


class SchemaSpec(Strict):
    columns: list[ColumnSchema] = Field(default_factory=list)
    strict: bool = Field(True, description="Extra columns are a schema break.")
    min_rows: int | None = Field(None, ge=0)
    max_rows: int | None = Field(None, ge=0)


# --- validation ---------------------------------------------------------------

DriftMethod = Literal["auto", "psi", "ks", "chisquare", "jensenshannon", "wasserstein", "linf"]


class FeatureDrift(Strict):
    method: DriftMethod = "auto"
    threshold: float | None = Field(None, gt=0)


class DriftSpec(Strict):
    enabled: bool = True
    reference: Literal["training", "previous_batch"] = "training"
    method: DriftMethod = Field(
        "auto",
        description="auto: KS / chi-square (p < 0.05) up to 1,000 reference rows, "
        "Wasserstein / Jensen-Shannon (>= 0.1) above, as Evidently does.",
    )
    threshold: float | None = Field(None, gt=0)
    psi_threshold: float = Field(0.2, gt=0)
    dataset_drift_share: float = Field(0.5, gt=0, le=1)
    features: dict[str, FeatureDrift] = Field(default_factory=dict)
    trigger_retraining: bool = True


class ValidationSpec(Strict):
    on_schema_break: Literal["stop", "warn"] = "stop"
    max_invalid_fraction: float = Field(0.05, ge=0.0, le=1.0)
    quarantine: bool = Field(True, description="Invalid rows always go to quarantine; false is not "
                             "implemented and refused.")
    drift: DriftSpec = Field(default_factory=DriftSpec)

    @field_validator("quarantine")
    @classmethod
    def _quarantine(cls, value: bool) -> bool:
        if not value:
            raise ValueError("false is not implemented (the validate step always keeps invalid rows "
                             "in quarantine); remove the key")
        return value


# --- features -----------------------------------------------------------------

AggFunction = Literal["count", "sum", "mean", "min", "max", "last"]


class AggregationSpec(Strict):
    """Per-entity aggregations of a column over trailing time windows, e.g. the mean
    spend over the last 7 days; each (function, window) becomes a feature named
    `<column>_<function>_<window>`."""

    column: str
    functions: list[AggFunction] = Field(min_length=1)
    windows: list[Duration] = Field(min_length=1)

    def output_names(self) -> list[str]:
        return [f"{self.column}_{fn}_{w}" for w in self.windows for fn in self.functions]


class FeatureViewSpec(Strict):
    """A group of features of one entity, computed by the same code for training and
    serving (Feast's feature view): row-wise `transformation`, then `aggregations`."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    entity: str | None = Field(None, description="Entity column; defaults to source.entity_column.")
    timestamp_column: str | None = Field(
        None, description="Event timestamp column; defaults to source.timestamp_column.")
    created_timestamp_column: str | None = Field(
        None, description="When a row became known (late backfills are hidden until then).")
    ttl: Duration = Field("30d", description="How far back a value may be looked up.")
    transformation: ImportPath | None = Field(
        None, description="Import path of a row-wise function pandas.DataFrame -> pandas.DataFrame.")
    features: list[str] = Field(default_factory=list,
                                description="Columns (of the source or the transformation's output).")
    aggregations: list[AggregationSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _outputs(self) -> FeatureViewSpec:
        names = list(self.features) + [n for a in self.aggregations for n in a.output_names()]
        if not names:
            raise ValueError(f"feature view {self.name!r} has no features: list 'features' "
                             "and/or 'aggregations'")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature view {self.name!r}: feature name(s) {dupes} appear twice")
        return self

    def feature_names(self) -> list[str]:
        return list(self.features) + [n for a in self.aggregations for n in a.output_names()]


class FeatureServiceSpec(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    features: list[str] = Field(min_length=1, description="'view:feature' or 'view:*'.")


class FeaturesSpec(Strict):
    views: list[FeatureViewSpec] = Field(default_factory=list)
    services: list[FeatureServiceSpec] = Field(default_factory=list)
    training_window: Duration | None = Field(
        "30d", description="The training set holds the label rows of validated batches this far "
                           "back from the newest row (None: all of them).")


# --- model --------------------------------------------------------------------


class ParamDistribution(Strict):
    """One dimension of a search space, named like Ray Tune's sampling functions."""

    type: Literal["uniform", "loguniform", "randint", "qrandint", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> ParamDistribution:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"type {self.type!r} needs a non-empty 'values' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"type {self.type!r} needs 'low' and 'high'")
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.type == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform needs low > 0, got {self.low}")
        return self


class SearchSpec(Strict):
    space: dict[str, ParamDistribution] = Field(default_factory=dict)
    num_samples: int = Field(8, ge=1)
    algorithm: Literal["random", "optuna", "grid"] = "random"
    scheduler: Literal["fifo", "asha"] = "fifo"
    max_concurrent_trials: int | None = Field(None, ge=1, description="Default: the cluster's CPUs "
                                              "divided by cpus_per_trial.")
    cpus_per_trial: float = Field(1.0, gt=0)
    time_budget_s: float | None = Field(None, gt=0)
    max_failures: int = Field(1, ge=0, description="Retries of a failed trial, from its checkpoint.")
    cv_folds: int | None = Field(None, ge=2, description="Time-ordered CV folds; default a holdout.")
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="Holdout share of the training "
                                       "rows (the newest) when cv_folds is not set.")
    max_iterations: int = Field(100, ge=1, description="ASHA: iterations (boosting rounds, epochs) "
                                "of an iterative estimator.")
    report_every: int = Field(10, ge=1, description="ASHA: iterations between reports.")
    grace_period: int = Field(1, ge=1, description="ASHA: reports before a trial can be stopped.")
    reduction_factor: float = Field(3.0, gt=1)

    @model_validator(mode="after")
    def _space(self) -> SearchSpec:
        if not self.space:
            raise ValueError("search.space is empty: name at least one parameter to search, or drop "
                             "`search` to train with model.params")
        reports = -(-self.max_iterations // self.report_every)
        if self.scheduler == "asha" and self.grace_period > reports:
            raise ValueError(f"grace_period {self.grace_period} is more reports than a trial makes "
                             f"({reports} = max_iterations {self.max_iterations} / report_every "
                             f"{self.report_every})")
        if self.algorithm == "optuna" and any(d.type == "grid" for d in self.space.values()):
            bad = sorted(k for k, d in self.space.items() if d.type == "grid")
            raise ValueError(f"algorithm 'optuna' cannot sample grid dimensions {bad}: use 'choice'")
        if self.algorithm == "grid" and any(d.type != "grid" for d in self.space.values()):
            bad = sorted(k for k, d in self.space.items() if d.type != "grid")
            raise ValueError(f"algorithm 'grid' needs every dimension of type 'grid'; {bad} are not")
        return self


class ModelSpec(Strict):
    task: Literal["classification", "regression"] = "classification"
    estimator: ImportPath = "sklearn.ensemble.HistGradientBoostingClassifier"
    params: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec | None = None
    metric: str = "roc_auc"
    metric_mode: Literal["max", "min"] | None = Field(None, description="Default: from the metric.")
    feature_service: str | None = None
    seed: int = 0
    categorical_encoding: Literal["onehot", "ordinal"] = "onehot"
    scale_numeric: bool = True
    segment_column: str | None = Field(None, description="Train one model per value of this "
                                       "categorical column, each a registered model of its own.")
    num_workers: int | None = Field(None, ge=1, description="xgboost only: data-parallel training "
                                    "across this many Ray Train workers.")

    @model_validator(mode="after")
    def _metric(self) -> ModelSpec:
        from mlplatform.evaluation.metric_names import TASK_METRICS, greater_is_better

        allowed = TASK_METRICS[self.task]
        if self.metric not in allowed:
            raise ValueError(f"model.metric {self.metric!r} is not a {self.task} metric; choose from "
                             f"{list(allowed)}")
        mode = "max" if greater_is_better(self.metric) else "min"
        if self.metric_mode is not None and self.metric_mode != mode:
            raise ValueError(f"model.metric_mode {self.metric_mode!r} contradicts {self.metric!r}, "
                             f"which is better when {'higher' if mode == 'max' else 'lower'}")
        self.metric_mode = mode
        return self


# --- evaluation ---------------------------------------------------------------


class ThresholdSpec(Strict):
    """TFX-style: a value bound plus a change bound against the champion."""

    metric: str
    min_value: float | None = None
    max_value: float | None = None
    min_absolute_change: float | None = None
    min_relative_change: float | None = None
    greater_is_better: bool | None = Field(None, description="Default: the metric's own direction.")


class EvaluationSpec(Strict):
    test_fraction: float = Field(0.2, gt=0, lt=1)
    split: Literal["time", "random"] = "time"
    thresholds: list[ThresholdSpec] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list, description="Columns to slice metrics by.")
    max_slice_regression: float = Field(0.05, ge=0, description="Largest drop of the primary "
                                        "metric in any slice against the champion.")
    min_slice_rows: int = Field(50, ge=1, description="Smaller slices are reported, not gated.")
    require_better_than_champion: bool = True


# --- serving ------------------------------------------------------------------


class AutoscalingSpec(Strict):
    """Ray Serve's autoscaling of the pipeline's ingress replicas (which host the models)."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas {self.max_replicas} is below min_replicas {self.min_replicas}")
        return self


class DeploySpec(Strict):
    """How the pipeline's models are served (one Ray Serve application per pipeline).

    With this section, the `deploy` step puts each new champion behind HTTP after the gate:
    infra-validated first, then 100% of the traffic; the previous champion stays deployed,
    idle, for an instant rollback. Without it nothing is served."""

    replicas: int = Field(1, ge=1, le=64, description="Fixed replica count (ignored with autoscaling).")
    autoscaling: AutoscalingSpec | None = None
    max_replicas_per_node: int | None = Field(
        None, ge=1, le=100, description="At most this many replicas on one Ray node (Serve's "
        "max_replicas_per_node): 1 spreads them over the nodes, so that losing a node loses one replica.")
    num_cpus: float = Field(0.5, ge=0, description="CPUs reserved per replica (0: share the node's "
                            "CPUs with batch work instead of holding them).")
    max_ongoing_requests: int = Field(64, ge=1, description="Requests a replica works on at once.")
    max_queued_requests: int = Field(256, ge=1, description="Requests queued per caller beyond that; "
                                     "more are shed with 503 and Retry-After instead of waiting.")
    max_rows: int = Field(1000, ge=1, le=100_000, description="Rows per request; more is a 413.")
    max_body_kb: int = Field(1024, ge=1, le=1024 * 1024, description="Request body size limit; more "
                             "is a 413, refused as the bytes arrive (before any parsing).")
    max_inflight_per_client: int = Field(64, ge=1, description="Requests one client (its API key "
                                         "header, else its peer address) may have in flight in one "
                                         "replica; more get 429 with Retry-After.")
    body_timeout_s: float = Field(30, gt=0, le=3600, description="Seconds a request's body may take "
                                  "to arrive; a slower client gets 408.")
    strict_inputs: bool = Field(True, description="An unknown column in a request is a 400 "
                                "(false: it is dropped).")
    missing_entity: Literal["error", "nulls"] = Field(
        "error", description="An entity id with no fresh online features: a 404 naming it (error), "
        "or nulls that the model's imputer fills (nulls).")
    shadow_fraction: float = Field(1.0, gt=0, le=1, description="Share of the traffic copied to a "
                                   "shadow version (`platformctl serve deploy --shadow V`).")
    keep_previous: Duration = Field("1d", description="How long the previous champion stays deployed "
                                    "at weight 0 for `platformctl models rollback`.")
    infra_validation_rows: int = Field(64, ge=1, le=10_000, description="Training rows a new version "
                                       "must answer exactly as offline before it gets traffic.")
    log_predictions: bool = Field(True, description="Write every prediction to the prediction log.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How a model that passed the "
                                 "gate reaches production: direct, canary, ab or shadow.")


# --- triggers and monitoring ------------------------------------------------------


class NewDataTrigger(Strict):
    """New files in source.path start a run, once per new batch (by content hash, as ingest
    decides what is new)."""

    poll: Duration = Field("30s", description="How often the watcher lists source.path.")


class ScheduleTrigger(Strict):
    cron: str = Field(description="Five-field cron expression, in UTC (e.g. '0 3 * * *').")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from croniter import croniter

        # croniter also accepts 6/7 fields (seconds, years): one meaning only, the classic one.
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a five-field cron expression "
                             "(minute hour day-of-month month day-of-week), e.g. '0 3 * * *'")
        from croniter import CroniterBadDateError

        try:  # valid fields can still name no date at all ('0 0 31 2 *': February 31st)
            croniter(value).get_next()
        except CroniterBadDateError:
            raise ValueError(f"{value!r} never happens (no date matches it)") from None
        return value


class DriftTrigger(Strict):
    on: list[Literal["batch", "live"]] = Field(
        default_factory=lambda: ["batch"], min_length=1,
        description="batch: the newest validated batch drifted; live: the served traffic drifted.")
    threshold: float | None = Field(
        None, gt=0, le=1, description="Share of drifted features that starts a retraining run, in "
        "(0, 1]; null: validation.drift.dataset_drift_share.")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        """YAML 1.1 reads the key `on` as the boolean true: take it back as the key it was."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class QualityTrigger(Strict):
    metric: str = Field(description="A metric of model.task (mlplatform.evaluation.metrics).")
    min_value: float | None = Field(None, description="Retrain below this (metrics where higher is "
                                    "better).")
    max_value: float | None = Field(None, description="Retrain above this (metrics where lower is "
                                    "better: rmse, mae, log_loss).")
    estimated: bool = Field(False, description="Use the estimate from the model's own scores "
                            "(classifiers, CBPE) when the labels have not arrived.")


class TriggersSpec(Strict):
    min_interval: Duration = Field("0s", description="Least time between two runs the triggers start.")
    new_data: NewDataTrigger | None = None
    schedule: ScheduleTrigger | None = None
    drift: DriftTrigger | None = None
    quality: QualityTrigger | None = None

    @field_validator("new_data", mode="before")
    @classmethod
    def _new_data_flag(cls, value: Any) -> Any:
        """`new_data: true` is the default poll; false is no trigger."""
        if value is True:
            return {}
        if value is False:
            return None
        return value


class MonitoringSpec(Strict):
    window: Duration = Field("1h", description="Live drift and quality window over the prediction log.")
    interval: Duration = Field("10m", description="How often the watcher computes them.")
    min_rows: int = Field(100, ge=1, description="Fewer predictions in the window: no verdict.")


class ExecutionSpec(Strict):
    """Where the data steps run (mlplatform.runtime.placement): `auto` runs a step in the job's
    own process when its input is at most the step's threshold, on the cluster above it."""

    placement: Literal["auto", "local", "cluster"] = Field(
        "auto", description="auto: by input size; local: always in the job's process; cluster: "
                            "always as Ray tasks (Ray Data, Tune).")
    local_max_rows: dict[Literal["ingest", "validate", "featurize", "training_set", "train"], int] = Field(
        default_factory=dict, description="Per step: the most input rows that run in the job's own "
                                          "process (replaces the measured threshold).")

    @field_validator("local_max_rows")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"execution.local_max_rows {bad}: a number of rows is 0 or more")
        return value


# Ranges of each metric's value (a quality threshold outside can never or always fire).
_METRIC_RANGE: dict[str, tuple[float | None, float | None]] = {
    "roc_auc": (0.0, 1.0), "accuracy": (0.0, 1.0), "f1": (0.0, 1.0), "log_loss": (0.0, None),
    "rmse": (0.0, None), "mae": (0.0, None), "r2": (None, 1.0)}


def _check_quality_trigger(q: QualityTrigger, task: str, model_metric: str) -> None:
    from mlplatform.evaluation.metric_names import TASK_METRICS, greater_is_better

    allowed = list(TASK_METRICS[task])
    if q.metric not in allowed:
        raise ValueError(f"triggers.quality.metric {q.metric!r} is not a {task} metric; choose "
                         f"from {allowed}")
    if q.metric != model_metric:  # live quality (mlplatform.monitoring.quality) measures that one
        raise ValueError(f"triggers.quality.metric {q.metric!r}: live quality is measured on "
                         f"model.metric {model_metric!r}; use it")
    field, other = ("min_value", "max_value") if greater_is_better(q.metric) else ("max_value", "min_value")
    if getattr(q, field) is None:
        raise ValueError(f"triggers.quality.{field} is required for {q.metric!r} "
                         f"({'higher' if field == 'min_value' else 'lower'} is better)")
    if getattr(q, other) is not None:
        raise ValueError(f"triggers.quality.{other} does not apply to {q.metric!r} "
                         f"({'higher' if field == 'min_value' else 'lower'} is better): use {field}")
    value = getattr(q, field)
    low, high = _METRIC_RANGE.get(q.metric, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"triggers.quality.{field} {value} is outside the range of {q.metric!r} "
                         f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]")
    if q.estimated and task != "classification":
        raise ValueError("triggers.quality.estimated: the estimate (CBPE) exists for classifiers "
                         f"only; model.task is {task!r}")


# --- the pipeline ---------------------------------------------------------------


class PipelineSpec(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    description: str = ""
    source: SourceSpec
    schema_: str | SchemaSpec | None = Field(
        None, alias="schema", description="Path to a schema YAML, or the schema inline."
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    deploy: DeploySpec | None = Field(None, description="Serve the champion over HTTP (Ray Serve).")
    triggers: TriggersSpec | None = Field(None, description="What starts a run by itself "
                                          "(`platformctl watch SPEC` runs the loop).")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)

    @field_validator("triggers")
    @classmethod
    def _quality_metric(cls, value: TriggersSpec | None, info: ValidationInfo) -> TriggersSpec | None:
        """A field validator, not the model's: its error carries the `triggers` path and line."""
        model = info.data.get("model")
        if value is not None and value.quality is not None and model is not None:
            _check_quality_trigger(value.quality, model.task, model.metric)
        validation = info.data.get("validation")
        if value is not None and value.drift is not None and validation is not None:
            drift = validation.drift
            if not drift.enabled:
                raise ValueError("triggers.drift: validation.drift.enabled is false, so no drift is "
                                 "ever measured and this trigger could never fire")
            if "batch" in value.drift.on and not drift.trigger_retraining:
                raise ValueError("triggers.drift.on: batch, but validation.drift.trigger_retraining is "
                                 "false (a batch's drift is recorded as no retraining trigger)")
        return value

    @model_validator(mode="after")
    def _references(self) -> PipelineSpec:
        views = {v.name: v for v in self.features.views}
        if len(views) != len(self.features.views):
            raise ValueError("features.views: two views share a name")
        for service in self.features.services:
            for ref in service.features:
                view, _, feature = ref.partition(":")
                if not feature or view not in views:
                    raise ValueError(
                        f"feature service {service.name!r}: {ref!r} does not name a feature view "
                        f"('view:feature'); views are {sorted(views)}"
                    )
                if feature != "*" and feature not in views[view].feature_names():
                    raise ValueError(
                        f"feature service {service.name!r}: unknown feature {ref!r}; view {view!r} "
                        f"has {views[view].feature_names()}"
                    )
        src = self.source
        for view in self.features.views:
            keys = {view.entity or src.entity_column, view.timestamp_column or src.timestamp_column,
                    view.created_timestamp_column, src.label_column} - {None}
            taken = sorted(keys & set(view.feature_names()))
            if taken:
                raise ValueError(f"feature view {view.name!r}: {taken} is a key, timestamp or label "
                                 "column, not a feature")
        from mlplatform.evaluation.metric_names import TASK_METRICS

        for i, t in enumerate(self.evaluation.thresholds):
            allowed = list(TASK_METRICS[self.model.task])
            if t.metric not in allowed:
                raise ValueError(f"evaluation.thresholds[{i}].metric {t.metric!r} is not a "
                                 f"{self.model.task} metric; choose from {allowed}")
        if self.deploy is not None and self.model.segment_column:
            raise ValueError("deploy: serving per-segment models (model.segment_column) is not "
                             "implemented yet; remove one of the two")
        if self.deploy is not None:
            from mlplatform.rollout.plan import check_task

            check_task(self.deploy.rollout, self.model.task)
        services = {s.name for s in self.features.services}
        if self.model.feature_service and self.model.feature_service not in services:
            raise ValueError(
                f"model.feature_service {self.model.feature_service!r} is not one of "
                f"features.services {sorted(services)}"
            )
        return self
