"""Lazy validation of a Ray Dataset against a schema, with quarantine.

One streaming pass (`map_batches` over any Ray Dataset; for Parquet files, Ray tasks over
their row groups): every block is checked with pyarrow.compute and numpy (all checks run,
as pandera's lazy mode does), its valid rows and its quarantined rows (with the reason)
are written by the task itself, and the block returns only a small partial of failure
counts and statistics. The driver never holds data rows, so memory
is set by the block size, not by the data size, and rows in = valid + quarantined.

Check levels:
- schema: a required column missing, an extra column in strict mode, a wrong type;
- dataset: null fraction, unseen-category share (when some is allowed), uniqueness,
  row-count bounds: they hold or fail for the batch as a whole;
- row: numeric range, categorical domain (when no unseen share is allowed), regex;
  failing rows are quarantined.

A range or domain the schema marks `soft` (inference marks what it read off the data)
is reported, not enforced: values outside it are counted per column and reported as a
shift (`ValidationResult.shifts`), the rows stay valid, and a shift is
never a reason to stop. A day of larger items is a covariate shift for drift and
retraining to handle, not a batch of broken rows.

The per-block checks live in mlplatform.data.block_checks; this module merges their partials
into a report and drives the pass (Ray Data, Ray tasks over Parquet row groups, or this
process).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from mlplatform import manifest
from mlplatform.data.block_checks import (
    MAX_SAMPLES,
    BlockPartial,
    CheckPlan,
    FailureCount,
    add_failure,
    block_task,
    check_block,
    write_part,
)
from mlplatform.data.drift import DriftReport, detect_drift
from mlplatform.data.stats import ColumnStats, DatasetStats, finalize
from mlplatform.spec import ColumnSchema, DriftSpec, SchemaSpec

# A column shifts when at least this share of rows lies outside a soft constraint. Inferred
# ranges hold the p0.1..p99.9 span plus a margin, so the same distribution puts far fewer
# rows outside; a smaller count is still reported, just not called a shift.
SHIFT_FRACTION = 0.01


class CheckFailure(BaseModel):
    column: str | None
    check: str
    level: Literal["schema", "dataset", "row"]
    failing: int
    fraction: float
    samples: list[Any] = []
    row_ids: list[Any] = []
    message: str


class Shift(BaseModel):
    """Values outside a soft constraint of one column: reported, never quarantined."""

    column: str
    constraint: Literal["range", "domain"]
    expected: str  # the soft bounds or domain, as the schema has them
    outside: int  # values outside it
    fraction: float  # of all rows
    seen_min: float | None = None  # the column's extremes in this batch (numeric)
    seen_max: float | None = None
    samples: list[Any] = []  # values outside (domain: the most frequent new ones)
    row_ids: list[Any] = []
    shifted: bool  # fraction >= SHIFT_FRACTION: a shift, not stray values
    message: str


class ValidationResult(BaseModel):
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    failures: list[CheckFailure]
    stats: DatasetStats
    drift: DriftReport | None = None
    shifts: list[Shift] = []
    # The parts the pass wrote, per output ("valid", "quarantine"): what a manifest commits.
    written: dict[str, list[manifest.PartFile]] = Field(default_factory=dict, exclude=True)

    @property
    def invalid_fraction(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    @property
    def schema_breaks(self) -> list[CheckFailure]:
        return [f for f in self.failures if f.level == "schema"]

    @property
    def shifted_columns(self) -> list[str]:
        """Columns with many values outside a soft constraint, in schema order."""
        return list(dict.fromkeys(s.column for s in self.shifts if s.shifted))


# --- the driver: merge partials into a report ------------------------------------------------


def _merge(partials: Iterable[BlockPartial]) -> BlockPartial:
    total = BlockPartial()
    for p in partials:
        total.rows += p.rows
        total.valid += p.valid
        total.quarantined += p.quarantined
        for name, cp in p.columns.items():
            if name in total.columns:
                total.columns[name].merge(cp)
            else:
                total.columns[name] = cp
        for key, acc in p.failures.items():
            add_failure(total, key[0], key[1], key[2], acc.count, acc.samples, acc.row_ids, acc.detail)
        for name, h in p.hashes.items():
            total.hashes[name] = np.concatenate([total.hashes[name], h]) if name in total.hashes else h
        for output, parts in p.written.items():
            total.written.setdefault(output, []).extend(parts)
    return total


def _dataset_checks(total: BlockPartial, schema: SchemaSpec) -> list[CheckFailure]:
    rows = max(total.rows, 1)
    out: list[CheckFailure] = []
    for (column, check, level), acc in total.failures.items():
        if level == "schema":
            out.append(CheckFailure(column=column, check=check, level="schema", failing=acc.count,
                                    fraction=acc.count / rows, samples=acc.samples, message=acc.detail))
        elif level == "row":
            out.append(CheckFailure(column=column, check=check, level="row", failing=acc.count,
                                    fraction=acc.count / rows, samples=acc.samples, row_ids=acc.row_ids,
                                    message=f"{acc.count} row(s) of {column!r} fail {check}"))
    for col in schema.columns:
        cp = total.columns.get(col.name)
        if cp is None:
            continue
        null_frac = cp.nulls / rows
        if null_frac > col.max_null_fraction:
            out.append(CheckFailure(
                column=col.name, check="max_null_fraction", level="dataset", failing=cp.nulls,
                fraction=null_frac,
                message=f"{null_frac:.1%} of {col.name!r} is null, above {col.max_null_fraction:.1%}"))
        acc = total.failures.get((col.name, "unseen share", "dataset"))
        if acc is not None and acc.count / rows > col.max_unseen_fraction:
            out.append(CheckFailure(
                column=col.name, check="domain", level="dataset", failing=acc.count,
                fraction=acc.count / rows, samples=acc.samples,
                message=f"{acc.count / rows:.1%} of {col.name!r} is outside its domain, above "
                        f"{col.max_unseen_fraction:.1%}"))
        if col.unique and col.name in total.hashes:
            h = total.hashes[col.name]
            dupes = int(h.size - np.unique(h).size)
            if dupes:
                out.append(CheckFailure(column=col.name, check="unique", level="dataset", failing=dupes,
                                        fraction=dupes / rows,
                                        message=f"{dupes} duplicate value(s) in {col.name!r}"))
    if schema.min_rows is not None and total.rows < schema.min_rows:
        out.append(CheckFailure(column=None, check="min_rows", level="dataset", failing=total.rows,
                                fraction=1.0, message=f"{total.rows} rows, fewer than {schema.min_rows}"))
    if schema.max_rows is not None and total.rows > schema.max_rows:
        out.append(CheckFailure(column=None, check="max_rows", level="dataset", failing=total.rows,
                                fraction=1.0, message=f"{total.rows} rows, more than {schema.max_rows}"))
    return out


def _bound(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:g}"


def _shift(col: ColumnSchema, constraint: str, acc: FailureCount, rows: int,
           stats: ColumnStats | None) -> Shift:
    """One column's values outside a soft constraint, described for a report and an alert."""
    fraction = acc.count / max(rows, 1)
    samples, seen_min, seen_max = list(acc.samples), None, None
    if constraint == "range":
        expected = (f"[{_bound(col.min if 'min' in col.soft else None, '-inf')}, "
                    f"{_bound(col.max if 'max' in col.soft else None, 'inf')}]")
        if stats is not None and stats.numeric is not None:
            seen_min, seen_max = stats.numeric.min, stats.numeric.max
        seen = f" (seen {seen_min:g}..{seen_max:g})" if seen_min is not None and seen_max is not None else ""
        message = f"{fraction:.1%} of {col.name!r} outside the soft range {expected}{seen}"
    else:
        allowed = set(col.domain or [])
        expected = f"{len(allowed)} values"
        if stats is not None and stats.categorical is not None:  # the most frequent new values
            new = sorted(((c, v) for v, c in stats.categorical.counts.items() if v not in allowed),
                         reverse=True)
            samples = [v for _, v in new[:MAX_SAMPLES]] or samples
        message = (f"{fraction:.1%} of {col.name!r} outside the soft domain of {expected} "
                   f"(new: {', '.join(map(repr, samples))})")
    return Shift(column=col.name, constraint=constraint, expected=expected,  # type: ignore[arg-type]
                 outside=acc.count, fraction=fraction, seen_min=seen_min, seen_max=seen_max,
                 samples=samples, row_ids=acc.row_ids, shifted=fraction >= SHIFT_FRACTION,
                 message=message)


def _shifts(total: BlockPartial, schema: SchemaSpec, stats: DatasetStats) -> list[Shift]:
    return [_shift(col, constraint, acc, total.rows, stats.columns.get(col.name))
            for col in schema.columns for constraint in ("range", "domain")
            if (acc := total.failures.get((col.name, constraint, "shift"))) is not None]


def _finish(out: Any, schema: SchemaSpec, reference: DatasetStats | None, drift_spec: DriftSpec | None,
            exclude_from_drift: tuple[str, ...], sample_size: int) -> ValidationResult:
    partials = [pickle.loads(b) for batch in out.iter_batches(batch_format="pyarrow", batch_size=None)
                for b in batch.column("partial").to_pylist()]
    return combine(partials, schema, reference=reference, drift_spec=drift_spec,
                   exclude_from_drift=exclude_from_drift, sample_size=sample_size)


def combine(partials: Iterable[BlockPartial], schema: SchemaSpec, *, reference: DatasetStats | None = None,
            drift_spec: DriftSpec | None = None, exclude_from_drift: tuple[str, ...] = (),
            sample_size: int = 20_000) -> ValidationResult:
    """The report from the blocks' partials: what the driver does after the pass (and what a
    test can do with `check_block` alone, without Ray). Each partial is merged as it comes,
    so an iterator of them is never held whole."""
    total = _merge(partials)
    stats = finalize(total.columns, total.rows, sample_size)
    result = ValidationResult(rows_in=total.rows, rows_valid=total.valid,
                              rows_quarantined=total.quarantined,
                              failures=_dataset_checks(total, schema), stats=stats,
                              shifts=_shifts(total, schema, stats), written=total.written)
    if reference is not None and drift_spec is not None and drift_spec.enabled:
        result.drift = drift_between(reference, stats, drift_spec, exclude_from_drift)
    return result


Output = str | manifest.PartSink | None


def _sink(out: Output) -> manifest.PartSink | None:
    return manifest.sink(out, manifest.new_write_id()) if isinstance(out, str) else out


def _plan(schema: SchemaSpec, reference: DatasetStats | None, rows: int, sample_size: int, seed: int,
          row_id_column: str | None, valid_out: Output, quarantine_out: Output) -> CheckPlan:
    return CheckPlan(schema=schema, edges=reference.hist_edges() if reference else {},
                     sample_rate=min(1.0, sample_size / max(rows, 1)), seed=seed,
                     row_id_column=row_id_column, valid_out=_sink(valid_out),
                     quarantine_out=_sink(quarantine_out))


def commit_output(result: ValidationResult, output: str, sink: manifest.PartSink, *, writer: str,
                  content_hash: str | None = None) -> manifest.Manifest:
    """Publish what the pass wrote to `output` ("valid" or "quarantine") with its manifest."""
    return manifest.commit(sink.fs, sink.folder, result.written.get(output, []), write_id=sink.write_id,
                           writer=writer, content_hash=content_hash)


def _commit_folders(result: ValidationResult, plan: CheckPlan, valid_out: Output,
                    quarantine_out: Output) -> ValidationResult:
    """A caller that named plain folders gets them committed now; one that passed PartSinks
    decides itself what to publish (the validate step keeps a rejected batch's rows unpublished)."""
    for output, given, sink in (("valid", valid_out, plan.valid_out),
                                ("quarantine", quarantine_out, plan.quarantine_out)):
        if isinstance(given, str) and sink is not None:
            commit_output(result, output, sink, writer=manifest.writer_label("validation"))
    return result


def validate_dataset(ds: Any, schema: SchemaSpec, *, reference: DatasetStats | None = None,
                     valid_out: Output = None, quarantine_out: Output = None,
                     drift_spec: DriftSpec | None = None, exclude_from_drift: tuple[str, ...] = (),
                     row_id_column: str | None = None, sample_size: int = 20_000,
                     expected_rows: int | None = None, seed: int = 0) -> ValidationResult:
    """Validate any Ray Dataset in one streaming pass; drift against `reference` if given.

    `valid_out` / `quarantine_out`: a folder or URI (committed with a manifest at the end),
    or a PartSink (parts only: the caller commits, see `commit_output`)."""
    rows = expected_rows if expected_rows is not None else ds.count()
    plan = _plan(schema, reference, rows, sample_size, seed, row_id_column, valid_out, quarantine_out)
    out = ds.map_batches(block_task(plan), batch_format="pyarrow", batch_size=None,
                         zero_copy_batch=True)
    result = _finish(out, schema, reference, drift_spec, exclude_from_drift, sample_size)
    return _commit_folders(result, plan, valid_out, quarantine_out)


def parquet_fragments(paths: list[str], fs: Any) -> list[dict[str, Any]]:
    """One work item per Parquet row group, from the footers alone."""
    items = []
    for path in paths:
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        items.extend({"path": path, "row_group": i, "rows": meta.row_group(i).num_rows}
                     for i in range(meta.num_row_groups))
    return items


RowFilter = Callable[[pa.Table], pa.Table]


def _fragment_check(plan: CheckPlan, fs: Any, dictionary_columns: list[str],  # noqa: ANN202
                    row_filter: RowFilter | None):
    """The work on one row group, wherever it runs: read it, check it, write its parts."""
    def check(path: str, group: int) -> BlockPartial:
        with fs.open_input_file(path) as f:
            # pre_buffer: the row group's column chunks in a few coalesced reads (what an
            # object store needs; no cost on a local disk); no threads: one task per CPU.
            pf = pq.ParquetFile(f, read_dictionary=dictionary_columns, pre_buffer=True)
            table = pf.read_row_group(group, use_threads=False)
        if row_filter is not None:
            table = row_filter(table)
        valid, quarantined, part = check_block(table, plan)
        name = f"{zlib.crc32(path.encode()):08x}-{group:05d}"
        write_part(part, "valid", valid, plan.valid_out, name)
        write_part(part, "quarantine", quarantined, plan.quarantine_out, name)
        return part

    return check


def validate_parquet(paths: list[str], fs: Any, schema: SchemaSpec, *,
                     reference: DatasetStats | None = None, valid_out: Output = None,
                     quarantine_out: Output = None, drift_spec: DriftSpec | None = None,
                     exclude_from_drift: tuple[str, ...] = (), row_id_column: str | None = None,
                     sample_size: int = 20_000, seed: int = 0, row_filter: RowFilter | None = None,
                     expected_rows: int | None = None, local: bool = False) -> ValidationResult:
    """Validate Parquet files: the same per-block checks, in Ray tasks of one or more row
    groups each, or with `local` one row group after another in this process
    (mlplatform.runtime.placement: below its threshold Ray's fixed cost is most of the time).

    `row_filter` keeps only some rows of each row group (e.g. a time window), inside the
    task; `expected_rows` is then how many it keeps, which sets the sampling rate.

    Ray Data's own Parquet reader lists files in a task of its own and decodes
    categorical columns as plain strings; on 2 cores that overhead made validation
    ~4x slower than one pyarrow process. Reading each row group inside the task (with
    categorical columns as dictionaries, which the checks then count by index) keeps
    the pass streaming and bounded by the row-group size, with far less overhead.
    """
    items = parquet_fragments(paths, fs)
    rows = expected_rows if expected_rows is not None else sum(i["rows"] for i in items)
    plan = _plan(schema, reference, rows, sample_size, seed, row_id_column, valid_out, quarantine_out)
    dictionary = [c.name for c in schema.columns if c.type == "category"]
    if local:
        check = _fragment_check(plan, fs, dictionary, row_filter)
        partials: Iterable[BlockPartial] = (check(i["path"], i["row_group"]) for i in items)
    else:
        from mlplatform.data.validation_tasks import on_ray

        partials = on_ray(plan, fs, dictionary, row_filter, items)
    result = combine(partials, schema, reference=reference, drift_spec=drift_spec,
                     exclude_from_drift=exclude_from_drift, sample_size=sample_size)
    return _commit_folders(result, plan, valid_out, quarantine_out)


def drift_between(reference: DatasetStats, current: DatasetStats, spec: DriftSpec,
                  exclude: tuple[str, ...] = ()) -> DriftReport:
    ref_num = {k: v for k, v in reference.samples.items() if k not in exclude}
    cur_num = {k: v for k, v in current.samples.items() if k not in exclude}
    ref_cat = {k: v for k, v in reference.categorical_counts().items() if k not in exclude}
    cur_cat = {k: v for k, v in current.categorical_counts().items() if k not in exclude}
    return detect_drift(ref_num, cur_num, ref_cat, cur_cat, reference_rows=reference.rows, spec=spec)
