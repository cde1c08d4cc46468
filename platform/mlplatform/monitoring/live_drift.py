"""Live drift: the champion's served traffic of the last window against the data it learned from.

Validation compares each new batch with the champion's training statistics; this compares what
the model actually sees in production with the same statistics, by the same code and settings
(`validation.drift`: methods, thresholds, dataset drift share), so a verdict here means what a
validation verdict means. The statistics of the window are computed by validation's own
per-block pass (mlplatform.data.validation.validate_parquet): Ray tasks over the row groups of
the prediction log, each keeping only the window's rows of the champion (shadow copies and
failed requests excluded) and returning a small partial, so the driver never holds the rows.

Fewer than `monitoring.min_rows` predictions give no verdict (and no alert): a handful of
requests says nothing about a distribution. Every verdict is recorded per feature
(MonitorResultRow kind "live_drift"), exported as a metric, written as an HTML + JSON report
under the storage URI, and dataset drift raises a "live_drift" alert linking the report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pydantic import BaseModel

from mlplatform import storage
from mlplatform.data.drift import FeatureDriftResult
from mlplatform.data.reference import champion_training_reference
from mlplatform.data.stats import DatasetStats
from mlplatform.data.validation import ValidationResult, validate_parquet
from mlplatform.errors import InputError
from mlplatform.monitoring import metrics
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.monitoring.live_report import live_drift_html
from mlplatform.monitoring.results import MonitorResult, record
from mlplatform.services import Services
from mlplatform.serving.predictions import PREDICTION_COLUMNS, prediction_files, unified_schema
from mlplatform.spec import ColumnSchema, PipelineSpec, SchemaSpec
from mlplatform.spec_types import duration_seconds

DEFAULT_WINDOW_S = 3600.0
DEFAULT_MIN_ROWS = 100
NUMERIC_TYPES = ("int", "float")
COMPARED_TYPES = ("int", "float", "category", "bool", "string")


class LiveDriftReport(BaseModel):
    pipeline: str
    model_version: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int
    reference: str  # what the window was compared with (the champion's training data), or why nothing
    features: list[FeatureDriftResult] = []
    drifted_features: list[str] = []
    drifted_share: float = 0.0
    dataset_drift: bool = False
    dataset_drift_share: float = 0.5
    report_uri: str | None = None
    enough_rows: bool = False
    alert_id: int | None = None
    message: str


# --- shared with quality: the spec's monitoring settings and the window ----------------------


def monitoring_settings(spec: PipelineSpec) -> tuple[float, int]:
    """(window seconds, min rows) from the spec's `monitoring` section; 1h and 100 without one."""
    mon = getattr(spec, "monitoring", None)
    window = getattr(mon, "window", None)
    if isinstance(window, str):
        window_s = float(duration_seconds(window))
    elif isinstance(window, int | float) and window > 0:
        window_s = float(window)
    else:
        window_s = DEFAULT_WINDOW_S
    min_rows = getattr(mon, "min_rows", None)
    return window_s, int(min_rows) if isinstance(min_rows, int) else DEFAULT_MIN_ROWS


def window_bounds(spec: PipelineSpec, window_s: float | None,
                  now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """[now - window, now) as naive UTC datetimes (the log's own convention)."""
    if window_s is None:
        window_s = monitoring_settings(spec)[0]
    if not window_s > 0:
        raise InputError(f"window: expected a positive duration, got {window_s!r} seconds")
    end = dt.datetime.now(dt.UTC) if now is None else now
    if end.tzinfo is not None:
        end = end.astimezone(dt.UTC).replace(tzinfo=None)
    return end - dt.timedelta(seconds=window_s), end


def _bound(value: dt.datetime, typ: pa.DataType) -> pa.Scalar:
    stamp = pd.Timestamp(value).tz_localize("UTC")
    return pa.scalar(stamp if getattr(typ, "tz", None) else stamp.tz_localize(None), typ)


def served_rows(schema: pa.Schema, version: str, start: dt.datetime, end: dt.datetime) -> pc.Expression:
    """The champion's answered requests in [start, end): its version, no shadow copy, no error."""
    typ = schema.field("event_ts").type
    expr = ((pc.field("event_ts") >= _bound(start, typ)) & (pc.field("event_ts") < _bound(end, typ))
            & (pc.field("version") == version))
    if "variant" in schema.names:
        expr = expr & ((pc.field("variant") != "shadow") | pc.field("variant").is_null())
    if "error" in schema.names:
        expr = expr & pc.field("error").is_null()
    return expr


# --- live drift ------------------------------------------------------------------------------


def _compared(reference: DatasetStats, log_schema: pa.Schema, spec: PipelineSpec) -> SchemaSpec:
    """The features both the log and the reference have, typed as the reference (no constraint
    at all: this pass computes statistics, it validates nothing)."""
    src = spec.source
    skip = {c for c in (src.entity_column, src.timestamp_column, src.label_column) if c}
    skip |= set(PREDICTION_COLUMNS)
    columns = [ColumnSchema(name=name, type="float" if cs.type in NUMERIC_TYPES else cs.type,  # type: ignore[arg-type]
                            required=False, max_null_fraction=1.0)
               for name, cs in reference.columns.items()
               if name in log_schema.names and name not in skip and cs.type in COMPARED_TYPES]
    return SchemaSpec(columns=columns, strict=False)


def _row_filter(schema: SchemaSpec, version: str, start: dt.datetime, end: dt.datetime):  # noqa: ANN202
    """Runs inside each Ray task: the window's champion rows, the compared columns only, numbers
    as float64 (a part may have stored an integer feature as int64, another as double)."""
    kinds = {c.name: c.type for c in schema.columns}

    def keep(table: pa.Table) -> pa.Table:
        table = table.filter(served_rows(table.schema, version, start, end))
        out = {}
        for name, kind in kinds.items():
            if name not in table.column_names:
                continue
            col = table.column(name)
            want = pa.float64() if kind == "float" else None
            if want is not None and col.type != want:
                try:
                    col = pc.cast(col, want, safe=False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    col = pa.nulls(len(col), want)  # text in a numeric feature: counted as missing
            out[name] = col
        return pa.table(out) if out else pa.table({"_rows": pa.nulls(table.num_rows)})

    return keep


def report_folder(services: Services, spec: PipelineSpec, kind: str, end: dt.datetime) -> str:
    return services.storage_uri("reports", spec.name, kind, end.strftime("%Y%m%dT%H%M%S%fZ"))


def write_report(services: Services, uri: str, name: str, page: str, data: dict[str, Any]) -> str:
    fs, path = storage.resolve(uri)
    storage.put_bytes(fs, f"{path}/{name}.json", json.dumps(data, indent=1, default=str).encode())
    storage.put_bytes(fs, f"{path}/{name}.html", page.encode())
    return f"{uri}/{name}.html"


def run_live_drift(services: Services, spec: PipelineSpec, *, window_s: float | None = None,
                   now: dt.datetime | None = None, alert: bool = True,
                   version: str | None = None) -> LiveDriftReport:
    """Compare the champion's served traffic of [now - window, now) with its training data.
    `version`: another version's traffic and training data instead, e.g. the champion a rollout
    has just replaced, which served the window."""
    start, end = window_bounds(spec, window_s, now)
    min_rows = monitoring_settings(spec)[1]
    drift_spec = spec.validation.drift
    base = {"pipeline": spec.name, "window_start": start, "window_end": end,
            "dataset_drift_share": drift_spec.dataset_drift_share}
    explicit = version
    version = version or services.models.champion(spec.name)
    if version is None:
        return LiveDriftReport(**base, model_version=None, rows=0, reference="none",
                               message=f"{spec.name} has no champion: nothing served to compare")
    fs, files = prediction_files(services.settings.storage_uri, spec.name,
                                 spec.model.feature_service or "all_features", since=start, until=end)
    log_schema = unified_schema([f.physical_schema for f in
                                 pads.dataset(files, format="parquet", filesystem=fs).get_fragments()]) \
        if files else None
    rows = 0
    if log_schema is not None:
        rows = pads.dataset(files, schema=log_schema, format="parquet", filesystem=fs).count_rows(
            filter=served_rows(log_schema, version, start, end))
    base.update(model_version=version, rows=rows)
    if rows < min_rows:
        return LiveDriftReport(**base, reference="not read",
                               message=f"{rows} prediction(s) of v{version} in the window, fewer than "
                                       f"{min_rows} (monitoring.min_rows): no verdict")
    training = champion_training_reference(
        services.metadata, spec.name,
        services.models.champion if explicit is None else (lambda _name: explicit))
    if training.stats is None or not drift_spec.enabled:
        why = training.label if training.stats is None else "drift is disabled (validation.drift.enabled)"
        return LiveDriftReport(**base, reference=training.label, message=f"no verdict: {why}")
    assert log_schema is not None
    schema = _compared(training.stats, log_schema, spec)
    if not schema.columns:
        return LiveDriftReport(**base, reference=training.label, enough_rows=True,
                               message="no feature of the log is in the training statistics: "
                                       "nothing compared")
    services.connect_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    # A check run from a terminal (`monitor drift`, the demo) prints its verdict, not Ray Data's
    # execution plan: its executor logs at INFO on the driver's console.
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
    result = validate_parquet(files, fs, schema, reference=training.stats, drift_spec=drift_spec,
                              row_filter=_row_filter(schema, version, start, end), expected_rows=rows)
    assert result.drift is not None
    drift = result.drift
    report = LiveDriftReport(
        **base, reference=training.label, features=drift.features, drifted_features=drift.drifted_features,
        drifted_share=drift.drifted_share, dataset_drift=drift.dataset_drift, enough_rows=True,
        message=(f"drift on {len(drift.drifted_features)} of {drift.n_features} feature(s)"
                 + (f": {', '.join(drift.drifted_features)}" if drift.drifted_features else "")
                 + ("; dataset drift" if drift.dataset_drift else "")))
    return _publish(services, spec, report, result, training.stats, alert)


def _publish(services: Services, spec: PipelineSpec, report: LiveDriftReport, result: ValidationResult,
             reference: DatasetStats, alert: bool) -> LiveDriftReport:
    """Report files, metadata rows, metrics and the alert of one verdict."""
    uri = report_folder(services, spec, "live_drift", report.window_end)
    report.report_uri = f"{uri}/live_drift.html"
    write_report(services, uri, "live_drift", live_drift_html(report, result, reference),
           {**report.model_dump(mode="json"), "statistics": result.stats.model_dump(mode="json")})
    record(services, [MonitorResult(
        pipeline=spec.name, kind="live_drift", model_version=report.model_version, variant="champion",
        name=f.feature, value=f.statistic, threshold=f.threshold, flagged=f.drifted,
        window_start=report.window_start, window_end=report.window_end,
        details={"method": f.method, "p_value": f.p_value, "kind": f.kind, "current_size": f.current_size,
                 "reference_size": f.reference_size, "report": report.report_uri})
        for f in report.features])
    for f in report.features:
        metrics.set_live_drift(spec.name, report.model_version or "", f.feature, f.statistic, f.drifted)
    if alert and report.dataset_drift:
        scores = {f.feature: f.statistic for f in report.features if f.drifted}
        found = raise_alert(
            services, pipeline=spec.name, source="live_drift", kind="live_drift", severity="warning",
            message=(f"live drift of v{report.model_version}'s served traffic "
                     f"({report.window_start:%Y-%m-%d %H:%M}..{report.window_end:%H:%M} UTC, {report.rows} "
                     f"predictions) on {', '.join(report.drifted_features)} against {report.reference}"),
            link=report.report_uri,
            details={"drifted_features": report.drifted_features, "scores": scores,
                     "drifted_share": report.drifted_share, "model_version": report.model_version,
                     "window_start": report.window_start.isoformat(),
                     "window_end": report.window_end.isoformat(), "rows": report.rows})
        report.alert_id = found.id
    return report
