"""The `validate` step: the policy around validation.

A schema break or too many invalid rows stops the run here: the step fails with a
message naming the columns and checks, an alert is recorded, the batch stays in
quarantine, and nothing downstream (so nothing that could replace the production
model) runs. Drift never stops a run: it is recorded, alerted, and marked as a
retraining trigger. Neither does a shift (values outside a soft, inferred range or
domain): it is reported and alerted with drift, and triggers retraining like drift.

The drift reference (`validation.drift.reference`) is, by default (`training`), the
statistics of the champion model's training data (mlplatform.data.reference), so a drift
that lasts is reported on every batch until a model trained on the new data is champion;
without a champion with recorded training statistics, and with `previous_batch`, it is
the last batch that passed validation. The label in the summary and report says which.
"""

from __future__ import annotations

import hashlib

from mlplatform import manifest, storage
from mlplatform.artifacts import (
    InferredSchema,
    Quarantine,
    RejectedBatch,
    Snapshot,
    Statistics,
    ValidatedBatch,
    ValidationReport,
)
from mlplatform.data.reference import (
    champion_training_reference,
    latest_stats,
    recorded_schema,
)
from mlplatform.data.report import shift_line, write_reports
from mlplatform.data.schema import infer_schema, schema_yaml
from mlplatform.data.stats import DatasetStats
from mlplatform.data.validation import commit_output, validate_parquet
from mlplatform.data.verdict import drift_alert, shift_summary, verdict
from mlplatform.errors import InputError
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.runtime.placement import place
from mlplatform.spec import SchemaSpec


def _uri(settings_uri: str, *parts: str) -> str:
    return storage.join(settings_uri, *parts)


def resolve_schema(ctx: StepContext,
                   table_for_inference: object | None) -> tuple[SchemaSpec, InferredSchema | None]:
    """The spec's schema; else the one this pipeline inferred before; else infer it now."""
    if isinstance(ctx.spec.schema_, SchemaSpec):
        return ctx.spec.schema_, None
    previous = recorded_schema(ctx.metadata, ctx.spec.name)
    if previous is not None:
        return previous, None
    if table_for_inference is None:
        raise InputError("no schema: the spec names none and none was inferred before")
    src = ctx.spec.source
    schema, notes = infer_schema(table_for_inference, entity=src.entity_column,  # type: ignore[arg-type]
                                 timestamp=src.timestamp_column, label=src.label_column)
    text = schema_yaml(schema, notes, source=f"run {ctx.run_id}")
    digest = hashlib.sha256(text.encode()).hexdigest()
    uri = _uri(ctx.settings.storage_uri, "schemas", ctx.spec.name, f"schema-{digest[:16]}.yaml")
    fs, path = storage.resolve(uri)
    storage.put_bytes(fs, path, text.encode())
    ctx.log(f"no schema in the spec: inferred one from this batch -> {uri} (review it)")
    return schema, InferredSchema(uri=uri, content_hash=digest, inferred=True, columns=len(schema.columns))


def load_reference(ctx: StepContext) -> tuple[DatasetStats | None, str]:
    """The statistics to measure drift against, and a label saying what they are (and, when
    `training` falls back to the previous batch, why)."""
    why_not = ""
    if ctx.spec.validation.drift.reference == "training":
        training = champion_training_reference(ctx.metadata, ctx.spec.name, ctx.services.models.champion)
        if training.stats is not None:
            return training.stats, training.label
        why_not = f"; reference training: {training.label}"
    found = latest_stats(ctx.metadata, ctx.spec.name, exclude_run=ctx.run_id)
    if found is None:
        return None, f"none (first validated batch{why_not})"
    stats, art = found
    return stats, f"previous batch ({art.snapshot}{why_not})"


@step("validate", consumes=(Snapshot,),
      produces=(InferredSchema, Statistics, ValidationReport, Quarantine, RejectedBatch, ValidatedBatch))
def validate(ctx: StepContext) -> StepResult:
    snaps = ctx.upstream(Snapshot)
    if not snaps:
        raise InputError("validate needs this run's ingest snapshot: run the whole pipeline, "
                         "or `platformctl runs retry RUN` for a run whose ingest completed")
    snap = snaps[0]
    snap_id = (snap.content_hash or "unknown")[:16]
    import pyarrow.dataset as pads

    where = ctx.placement = place(ctx.spec.execution, "validate", snap.rows, setting=ctx.settings.placement)
    ctx.log(f"{snap.rows} rows: {where.line()}")
    if not where.local:
        ctx.services.connect_ray()
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
    fs, files = manifest.committed_files(snap.uri)
    first = None
    if not isinstance(ctx.spec.schema_, SchemaSpec):
        first = pads.dataset(files, format="parquet", filesystem=fs).head(50_000)
    schema, schema_out = resolve_schema(ctx, first)
    reference, ref_label = load_reference(ctx)
    src = ctx.spec.source
    base = ctx.settings.storage_uri
    valid_uri = _uri(base, "validated", ctx.spec.name, snap_id)
    # One quarantine folder per attempt: a retry never erases what an earlier one kept.
    quarantine_uri = _uri(base, "quarantine", ctx.spec.name, ctx.run_id, f"attempt-{ctx.execution_id}")
    # The Ray tasks write their parts straight into the final folders; only the manifests
    # written below (by this driver) make them visible. A new write id per attempt.
    write_id = manifest.new_write_id(f"{ctx.run_id}-{ctx.execution_id}")
    valid_sink = manifest.sink(valid_uri, write_id)
    quarantine_sink = manifest.sink(quarantine_uri, write_id)
    try:
        result = validate_parquet(
            files, fs, schema, reference=reference, valid_out=valid_sink, quarantine_out=quarantine_sink,
            drift_spec=ctx.spec.validation.drift, row_id_column=src.entity_column,
            exclude_from_drift=tuple(c for c in (src.entity_column, src.timestamp_column,
                                                 src.label_column) if c),
            local=where.local)
    except Exception as exc:  # e.g. files whose column types do not unify: name the batch
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"batch {snap_id} ({', '.join(snap.files)}) "
                         f"cannot be read as one table: {last}") from None
    writer = manifest.writer_label(f"validate {ctx.run_id}")
    if result.rows_quarantined:
        commit_output(result, "quarantine", quarantine_sink, writer=writer)
    assert result.rows_in == result.rows_valid + result.rows_quarantined
    ctx.log(f"{result.rows_in} rows: {result.rows_valid} valid, {result.rows_quarantined} quarantined; "
            f"{len(result.failures)} failing check(s); drift reference: {ref_label}")
    stats_uri = _uri(base, "stats", ctx.spec.name, snap_id)
    sfs, spath = storage.resolve(stats_uri)
    result.stats.save(sfs, spath)
    report_uri = _uri(base, "reports", ctx.spec.name, ctx.run_id)
    rfs, rpath = storage.resolve(report_uri)
    write_reports(result, schema, reference, rfs, rpath, title=f"{ctx.spec.name} / {ctx.run_id}")
    outputs = [a for a in [schema_out] if a] + [
        Statistics(uri=stats_uri, content_hash=snap.content_hash, snapshot=snap_id, rows=result.rows_in),
        ValidationReport(uri=report_uri, html=f"{report_uri}/validation.html",
                         json_=f"{report_uri}/validation.json", drift_reference=ref_label),
    ]
    if result.rows_quarantined:
        outputs.append(Quarantine(uri=quarantine_uri, rows=result.rows_quarantined))
    drift = result.drift
    summary = {"rows_in": result.rows_in, "rows_valid": result.rows_valid,
               "rows_quarantined": result.rows_quarantined, "failures": len(result.failures),
               "drift_reference": ref_label,
               "drifted_features": drift.drifted_features if drift else [],
               "dataset_drift": bool(drift and drift.dataset_drift),
               "shifted_columns": result.shifted_columns, "shift": shift_summary(result),
               "retrain_trigger": bool(((drift and drift.n_drifted) or result.shifted_columns) and
                                       ctx.spec.validation.drift.trigger_retraining),
               "report": f"{report_uri}/validation.html"}
    alert = drift_alert(result, ref_label)
    if alert is not None:
        raise_alert(ctx.services, pipeline=ctx.spec.name, source="drift", kind="drift", severity=alert[0],
                    message=alert[1], run_id=ctx.run_id, step="validate", link=summary["report"],
                    details={"dataset_drift": bool(drift and drift.dataset_drift),
                             "drifted_share": drift.drifted_share if drift else 0.0,
                             "shift": summary["shift"]})
        ctx.log(alert[1])
    reasons = verdict(result, ctx.spec)
    if reasons:
        message = (f"batch {snap_id} rejected (the batch stays in its snapshot {snap.uri}; "
                   f"{result.rows_quarantined} failing row(s) under {quarantine_uri}): "
                   + " | ".join(reasons))
        if result.shifted_columns:
            message += f" (also, not a reason to stop: {shift_line(result)})"
        kind = "schema_break" if result.schema_breaks else "invalid_data"
        raise_alert(ctx.services, pipeline=ctx.spec.name, source="validation", kind=kind, severity="critical",
                    message=message, run_id=ctx.run_id, step="validate", link=summary["report"],
                    details={"failures": [f.model_dump(mode="json") for f in result.failures]})
        _drop_uncommitted(valid_sink, result.written.get("valid", []))
        outputs.append(RejectedBatch(uri=snap.uri, content_hash=snap.content_hash, rows=result.rows_in,
                                     reasons=reasons))
        return StepResult(inputs=[snap], outputs=outputs, summary=summary, fail=message)
    # The commit supersedes an earlier validation of the same snapshot (its parts are deleted).
    commit_output(result, "valid", valid_sink, writer=writer, content_hash=snap.content_hash)
    outputs.append(ValidatedBatch(uri=valid_uri, content_hash=snap.content_hash, rows=result.rows_valid,
                                  snapshot=snap_id))
    msg = f"{result.rows_valid}/{result.rows_in} rows valid"
    if drift is not None:
        msg += f", drift on {drift.n_drifted}/{drift.n_features} feature(s)"
    return StepResult(inputs=[snap], outputs=outputs, summary=summary, message=msg)


def _drop_uncommitted(sink: manifest.PartSink, parts: list[manifest.PartFile]) -> None:
    """A rejected batch's valid rows are never published: delete this attempt's parts (they
    were invisible anyway; an earlier committed validation of the snapshot stays as it was)."""
    for part in parts:
        sink.fs.delete_file(f"{sink.folder}/{part.name}")
