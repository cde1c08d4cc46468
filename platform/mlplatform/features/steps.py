"""The `featurize` and `training_set` steps.

featurize: the validated batch -> each view's transformation and windowed aggregations
on Ray Data -> the offline store (one idempotent write per batch and view version) ->
the online store (incrementally). Windows reach back into earlier validated batches,
so a 7-day mean on day 8 covers days 2-8, not just day 8.

training_set: the label rows of the validated batches in `features.training_window`,
joined point-in-time with the model's feature service, written as Parquet with a
report of what matched and how many rows had no value within the TTL, and with the
statistics of those rows' raw columns (what the validate step compares batches with:
the drift reference once a model trained on them is champion, mlplatform.data.reference).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform import manifest, storage
from mlplatform.artifacts import FeatureRows, FeatureViewDefinition, TrainingSet, ValidatedBatch
from mlplatform.data.reference import recorded_schema, training_stats_uri
from mlplatform.data.stats import DatasetStats
from mlplatform.data.validation import validate_parquet
from mlplatform.errors import InputError
from mlplatform.features.compute import (
    HISTORY_FLAG,
    aggregate,
    check_columns,
    compute_frame,
    to_utc_naive,
    transform,
)
from mlplatform.features.definitions import FeatureView
from mlplatform.features.offline_store import time_range
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.runtime.placement import place
from mlplatform.spec import SchemaSpec, duration_seconds

if TYPE_CHECKING:
    from mlplatform.features.store import FeatureStore

TRAINING_DATA = "data.parquet"
STATS_SAMPLE_SIZE = 20_000  # the validate step's: training and batch statistics are alike


def _validated_batch(ctx: StepContext) -> ValidatedBatch:
    found = ctx.upstream(ValidatedBatch)
    if not found:
        raise InputError(f"{ctx.step} needs this run's validated batch: run the whole pipeline, or "
                         "`platformctl runs retry RUN` for a run whose validate step completed")
    return found[0]


def _batch_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files of a committed validated batch (its manifest's); FileNotFoundError when
    nothing is committed there or it kept no rows."""
    fs, files = manifest.committed_files(uri)
    if not files:
        raise FileNotFoundError(f"validated batch {storage.redact(uri)} has no valid rows")
    return fs, files


def _read(uri: str, ts: str, start: dt.datetime | None = None, end: dt.datetime | None = None,
          columns: list[str] | None = None) -> pa.Table:
    fs, files = _batch_files(uri)
    ds = pads.dataset(files, format="parquet", filesystem=fs)
    expr = time_range(ts, ds.schema.field(ts).type, start, end)
    return ds.to_table(columns=columns, filter=expr)


def _history(ctx: StepContext, current: ValidatedBatch, view: FeatureView, start: dt.datetime,
             end: dt.datetime) -> list[pa.Table]:
    """Rows of earlier validated batches inside the view's longest window."""
    tables = []
    for _, _, art in ctx.metadata.outputs_of(ValidatedBatch, pipeline=ctx.spec.name, step="validate"):
        if art.uri == current.uri:
            continue
        try:
            t = _read(art.uri, view.timestamp_column, start, end)
        except (FileNotFoundError, OSError):  # a batch whose files were cleaned up
            continue
        if len(t):
            tables.append(t)
    return tables


def compute_view(view: FeatureView, batch_uri: str, history: list[pa.Table], *, local: bool = False
                 ) -> pd.DataFrame:
    """The view's rows for one batch: the transformation per block, then aggregations per
    entity bucket; history rows only feed the windows. As Ray Data tasks, or with `local`
    the same functions on the whole batch in this process (mlplatform.runtime.placement).

    Rows reach the aggregations through the driver, split by entity hash into one
    block per bucket, rather than through Ray Data's groupby: its hash shuffle starts
    aggregator actors that, on a 2-CPU cluster, left no CPU for the map tasks feeding
    them (a day of demo data took minutes and the next day's run hung). A batch plus
    its window history is small next to the driver's memory.
    """
    spec = view.view_spec()
    if spec.transformation is None and not spec.aggregations:  # plain columns: nothing to compute
        table = _read(batch_uri, view.timestamp_column, columns=[*view.key_columns, *view.features])
        df = table.to_pandas()
        df[view.timestamp_column] = to_utc_naive(df[view.timestamp_column], view.timestamp_column)
        return df.sort_values([view.timestamp_column, view.entity], kind="stable").reset_index(drop=True)
    if local:
        rows = _transform_batch(_flag(_read(batch_uri, view.timestamp_column).to_pandas(), history=False),
                                view)
        if history:
            hist = pa.concat_tables(history, promote_options="permissive").to_pandas()
            rows = pd.concat([rows, _transform_batch(_flag(hist, history=True), view)], ignore_index=True)
        if spec.aggregations and len(rows):
            rows = _aggregate_group(rows, view)
    else:
        rows = _compute_on_ray(view, batch_uri, history)
    df = rows.loc[~rows[HISTORY_FLAG].astype(bool), [*view.key_columns, *view.features]]
    return df.sort_values([view.timestamp_column, view.entity], kind="stable").reset_index(drop=True)


def _compute_on_ray(view: FeatureView, batch_uri: str, history: list[pa.Table]) -> pd.DataFrame:
    import ray

    fs, files = _batch_files(batch_uri)
    ds = ray.data.read_parquet(files, filesystem=fs).map_batches(
        _flag, fn_kwargs={"history": False}, batch_format="pandas")
    if history:
        hist = pa.concat_tables(history, promote_options="permissive")
        ds = ds.union(ray.data.from_arrow(hist).map_batches(
            _flag, fn_kwargs={"history": True}, batch_format="pandas"))
    ds = ds.map_batches(_transform_batch, fn_kwargs={"view": view}, batch_format="pandas")
    rows = pd.concat([ray.get(r) for r in ds.to_pandas_refs()], ignore_index=True)
    if view.view_spec().aggregations and len(rows):
        buckets = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(rows) // 5000 + 1))
        codes = pd.util.hash_pandas_object(rows[view.entity], index=False).to_numpy() % buckets
        parts = [rows.loc[codes == b] for b in range(buckets) if (codes == b).any()]
        agg = ray.data.from_pandas(parts).map_batches(
            _aggregate_group, fn_kwargs={"view": view}, batch_format="pandas", batch_size=None)
        rows = pd.concat([ray.get(r) for r in agg.to_pandas_refs()], ignore_index=True)
    return rows


def _flag(df: pd.DataFrame, history: bool) -> pd.DataFrame:
    df[HISTORY_FLAG] = history
    return df


def _transform_batch(df: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    df[view.timestamp_column] = to_utc_naive(df[view.timestamp_column], view.timestamp_column)
    return transform(view, df)


def _aggregate_group(df: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    return aggregate(view, df)


def _featurize_batch(ctx: StepContext, fstore: FeatureStore, view: FeatureView, batch: ValidatedBatch,
                     lo: dt.datetime, hi: dt.datetime, local: bool, outputs: list[FeatureRows]
                     ) -> tuple[int, int]:
    """One batch's rows of one view at its version, written to the offline store (one
    idempotent write per batch and version); returns (rows, history rows the windows used)."""
    snap = (batch.content_hash or "unknown")[:16]
    windows = [duration_seconds(w) for a in view.view_spec().aggregations for w in a.windows]
    history = _history(ctx, batch, view, lo - dt.timedelta(seconds=max(windows)), hi) if windows else []
    df = compute_view(view, batch.uri, history, local=local)
    result = fstore.write(view.name, df, f"{snap}-{view.version}")
    outputs.append(FeatureRows(uri=fstore.offline.view_uri(view.name), content_hash=result.content_hash,
                               view=view.name, version=view.version, rows=result.rows,
                               write_id=result.write_id, dates=result.dates, files=result.files,
                               snapshot=snap))
    history_rows = sum(len(t) for t in history)
    ctx.log(f"{view.name} v{view.version}: batch {snap}: {result.rows} rows -> "
            f"{fstore.offline.view_uri(view.name)} (windows used {history_rows} earlier rows)")
    return result.rows, history_rows


def _backfill(ctx: StepContext, fstore: FeatureStore, view: FeatureView, current: ValidatedBatch,
              newest: dt.datetime, local: bool) -> list[FeatureRows]:
    """The earlier validated batches inside the training window that have no rows at the
    view's current version (its code or definition changed since they were featurized, or
    the view is new): computed now, oldest first, so the training set joins every row with
    features of one version, never old rows with the old code's values."""
    window = ctx.spec.features.training_window
    start = newest - dt.timedelta(seconds=duration_seconds(window)) if window else None
    done = {(a.view, a.version, a.snapshot)
            for _, _, a in ctx.metadata.outputs_of(FeatureRows, pipeline=ctx.spec.name, step="featurize")}
    out: list[FeatureRows] = []
    batches = ctx.metadata.outputs_of(ValidatedBatch, pipeline=ctx.spec.name, step="validate")
    for _, _, art in reversed(batches):
        snap = (art.content_hash or "unknown")[:16]
        if art.uri == current.uri or (view.name, view.version, snap) in done:
            continue
        try:
            bounds = pc.min_max(_read(art.uri, view.timestamp_column,
                                      columns=[view.timestamp_column])[view.timestamp_column]).as_py()
        except (FileNotFoundError, OSError):  # no valid rows, or its files were cleaned up
            continue
        lo, hi = (pd.Timestamp(bounds[k]).to_pydatetime() for k in ("min", "max"))
        if (start is not None and hi < start) or lo > newest:
            continue
        _featurize_batch(ctx, fstore, view, art, lo, hi, local, out)
        done.add((view.name, view.version, snap))
    return out


@step("featurize", consumes=(ValidatedBatch,), produces=(FeatureRows, FeatureViewDefinition))
def featurize(ctx: StepContext) -> StepResult:
    if not ctx.spec.features.views:
        return StepResult(message="no feature views in the spec: nothing to featurize")
    batch = _validated_batch(ctx)
    fstore = ctx.services.feature_store(ctx.spec)
    snap = (batch.content_hash or "unknown")[:16]
    ts_col = ctx.spec.source.timestamp_column
    fs, files = _batch_files(batch.uri)
    sample = pads.dataset(files, format="parquet", filesystem=fs).head(200).to_pandas()
    bounds = pc.min_max(_read(batch.uri, ts_col, columns=[ts_col])[ts_col]).as_py()
    lo, hi = (pd.Timestamp(bounds[k]).to_pydatetime() for k in ("min", "max"))
    # Check every view on a sample first, in-process: a missing column or a transformation
    # that raises is reported before any cluster work and before anything is written.
    for view in fstore.views.values():
        check_columns(view, list(transform(view, sample.copy()).columns), f"batch {snap}")
        compute_frame(view, sample)
    where = ctx.placement = place(ctx.spec.execution, "featurize", batch.rows, setting=ctx.settings.placement)
    ctx.log(f"{batch.rows} rows: {where.line()}")
    if not where.local:
        ctx.services.connect_ray()
        import ray

        ray.data.DataContext.get_current().enable_progress_bars = False
    outputs: list[FeatureRows | FeatureViewDefinition] = []
    summary: dict = {}
    lines: list[str] = []
    for view in fstore.views.values():
        rows_out: list[FeatureRows] = []
        backfilled = _backfill(ctx, fstore, view, batch, hi, where.local)
        rows, history_rows = _featurize_batch(ctx, fstore, view, batch, lo, hi, where.local, rows_out)
        outputs += [*rows_out, *backfilled]
        outputs.append(FeatureViewDefinition(uri=f"feature-view://{ctx.spec.name}/{view.name}",
                                             content_hash=view.version, **view.model_dump(mode="json")))
        summary[view.name] = {"rows": rows, "history_rows": history_rows, "version": view.version,
                              "backfilled_batches": len(backfilled)}
        lines.append(f"{view.name}: {rows} rows (v{view.version})"
                     + (f", {len(backfilled)} earlier batch(es) backfilled" if backfilled else ""))
    for rep in fstore.materialize():
        summary.setdefault(rep.view, {})["online_entities"] = rep.entities_written
        ctx.log(f"{rep.view}: {rep.entities_written} entities materialised to {fstore.online.url}")
    fstore.close()
    return StepResult(inputs=[], outputs=outputs, summary=summary, message="; ".join(lines))


def _in_window(ts: str, start: dt.datetime | None, end: dt.datetime) -> Callable[[pa.Table], pa.Table]:
    """The rows of a block inside the window (bounds cast to the block's own timestamp type)."""
    def keep(table: pa.Table) -> pa.Table:
        expr = time_range(ts, table.schema.field(ts).type, start, end)
        return table.filter(expr) if expr is not None else table

    return keep


def window_statistics(batches: list[ValidatedBatch], schema: SchemaSpec, ts: str, start: dt.datetime | None,
                      end: dt.datetime, *, local: bool = False) -> DatasetStats | None:
    """Statistics of the rows of `batches` with start <= ts <= end, computed by the validate
    step's own pass (one Ray task per row group, keeping the window's rows), so that drift
    against them means what drift against a batch means. None: no rows."""
    files: list[str] = []
    rows = 0
    fs = None
    for b in batches:  # validated batches all live under the storage URI: one filesystem
        try:
            fs, found = _batch_files(b.uri)
        except FileNotFoundError:
            continue
        ds = pads.dataset(found, format="parquet", filesystem=fs)
        rows += ds.count_rows(filter=time_range(ts, ds.schema.field(ts).type, start, end))
        files += found
    if not rows:
        return None
    return validate_parquet(files, fs, schema, sample_size=STATS_SAMPLE_SIZE,
                            row_filter=_in_window(ts, start, end), expected_rows=rows, local=local).stats


def _record_statistics(ctx: StepContext, used: list[ValidatedBatch], start: dt.datetime | None,
                       end: dt.datetime, rows: int) -> str | None:
    """Compute and store the training rows' statistics; their URI, or None (and why, logged)."""
    schema = ctx.spec.schema_ if isinstance(ctx.spec.schema_, SchemaSpec) else recorded_schema(
        ctx.metadata, ctx.spec.name)
    if schema is None:
        ctx.log("no schema (none in the spec, none recorded): no training statistics")
        return None
    where = ctx.placement = place(ctx.spec.execution, "training_set", rows, setting=ctx.settings.placement)
    ctx.log(f"statistics of {rows} training rows: {where.line()}")
    if not where.local:
        ctx.services.connect_ray()
    stats = window_statistics(used, schema, ctx.spec.source.timestamp_column, start, end, local=where.local)
    if stats is None:
        return None
    uri = training_stats_uri(ctx.settings.storage_uri, ctx.spec.name, ctx.run_id)
    fs, path = storage.resolve(uri)
    stats.save(fs, path)
    ctx.log(f"statistics of the {stats.rows} training rows -> {uri}")
    return uri


def _publish_training_set(fs: pafs.FileSystem, path: str, df: pd.DataFrame, report_json: dict,
                          writer: str) -> str:
    """The report, then the data (each one atomic put), then the folder's manifest naming the
    data: a reader that finds data.parquet finds its report. The data's sha256."""
    storage.put_bytes(fs, f"{path}/report.json", json.dumps(report_json, indent=2).encode())
    table = pa.Table.from_pandas(df, preserve_index=False)
    buf = pa.BufferOutputStream()  # rendered once: hashed here, not read back from the store
    pq.write_table(table, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(memoryview(data)).hexdigest()
    storage.put_bytes(fs, f"{path}/{TRAINING_DATA}", data)
    manifest.commit(fs, path, [manifest.PartFile(name=TRAINING_DATA, rows=table.num_rows,
                                                 size_bytes=data.size, sha256=digest)],
                    write_id=manifest.new_write_id(), writer=manifest.writer_label(writer),
                    content_hash=digest)
    return digest


@step("training_set", consumes=(ValidatedBatch, FeatureRows), produces=(TrainingSet,))
def training_set(ctx: StepContext) -> StepResult:
    if not ctx.spec.features.views:
        return StepResult(message="no feature views in the spec: no training set")
    batch = _validated_batch(ctx)
    src = ctx.spec.source
    fstore = ctx.services.feature_store(ctx.spec)
    service, refs = fstore.features(None)
    keys = [c for c in dict.fromkeys([src.entity_column, *(fstore.views[r.view].entity for r in refs),
                                      src.timestamp_column, src.label_column]) if c]
    newest = pd.Timestamp(pc.max(_read(batch.uri, src.timestamp_column, columns=[src.timestamp_column])
                                 [src.timestamp_column]).as_py()).to_pydatetime()
    window = ctx.spec.features.training_window
    start = newest - dt.timedelta(seconds=duration_seconds(window)) if window else None
    tables, used = [], []
    for _, _, art in ctx.metadata.outputs_of(ValidatedBatch, pipeline=ctx.spec.name, step="validate"):
        try:
            t = _read(art.uri, src.timestamp_column, start, newest, columns=keys)
        except (FileNotFoundError, OSError):
            continue
        if len(t):
            tables.append(t)
            used.append(art)
    rows = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    rows = rows.sort_values([src.timestamp_column, src.entity_column], kind="stable").reset_index(drop=True)
    result = fstore.get_training_set(rows, service if service != "all_features" else None)
    df, report = result.df, result.report
    for v in report.views:  # the audit the done-when asks for, on every run
        seen = df[f"{v.view}__event_ts"]
        leaked = int((seen.notna() & (seen > df[src.timestamp_column])).sum())
        if leaked:
            raise RuntimeError(f"point-in-time join leaked {leaked} future value(s) of view {v.view!r}")
    out_uri = storage.join(ctx.settings.storage_uri, "training_sets", ctx.spec.name, ctx.run_id)
    fs, path = storage.resolve(out_uri)
    report_json = report.model_dump(mode="json")
    label = df[src.label_column] if src.label_column else None
    report_json["label_rate"] = (float(label.mean()) if label is not None
                                 and pd.api.types.is_numeric_dtype(label) else None)
    report_json["batches"] = [a.uri for a in used]
    digest = _publish_training_set(fs, path, df, report_json, f"training_set {ctx.run_id}")
    statistics = _record_statistics(ctx, used, start, newest, sum(len(t) for t in tables))
    unmatched = {v.view: v.unmatched for v in report.views}
    msg = (f"{report.rows} rows x {len(report.features)} features from {len(used)} batch(es); "
           + ", ".join(f"{v}: {n} row(s) without a value in the TTL" for v, n in unmatched.items()))
    ctx.log(msg)
    out = TrainingSet(uri=storage.join(out_uri, TRAINING_DATA), content_hash=digest, rows=report.rows,
                      service=service, view_versions=report.view_versions, features=report.features,
                      label=src.label_column, timestamp=src.timestamp_column, entity=src.entity_column,
                      report=storage.join(out_uri, "report.json"), statistics=statistics,
                      service_hash=hashlib.sha256(json.dumps(report.view_versions, sort_keys=True)
                                                  .encode()).hexdigest()[:12])
    fstore.close()
    return StepResult(inputs=list(used),
                      outputs=[out],
                      summary={"rows": report.rows, "views": [v.model_dump() for v in report.views],
                               "statistics": statistics,
                               "sample_entity": str(df[src.entity_column].iloc[-1]) if len(df) else None,
                               "sample_at": df[src.timestamp_column].iloc[-1].isoformat() if len(df)
                               else None},
                      message=msg)
