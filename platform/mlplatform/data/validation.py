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
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from mlplatform import manifest
from mlplatform.data.drift import DriftReport, detect_drift
from mlplatform.data.schema import arrow_kind, type_matches
from mlplatform.data.stats import ColumnPartial, ColumnStats, DatasetStats, finalize, numeric_partial, scratch
from mlplatform.spec import ColumnSchema, DriftSpec, SchemaSpec

MAX_SAMPLES = 5
REASON = "_reason"
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


# --- per-block work (runs in Ray tasks) ------------------------------------------------------


@dataclass
class _Acc:
    count: int = 0
    samples: list[Any] = field(default_factory=list)
    row_ids: list[Any] = field(default_factory=list)
    detail: str = ""


@dataclass
class BlockPartial:
    rows: int = 0
    valid: int = 0
    quarantined: int = 0
    columns: dict[str, ColumnPartial] = field(default_factory=dict)
    failures: dict[tuple[str | None, str, str], _Acc] = field(default_factory=dict)
    hashes: dict[str, np.ndarray] = field(default_factory=dict)
    written: dict[str, list[manifest.PartFile]] = field(default_factory=dict)


@dataclass
class CheckPlan:
    schema: SchemaSpec
    edges: dict[str, np.ndarray]
    sample_rate: float
    seed: int
    row_id_column: str | None
    valid_out: manifest.PartSink | None  # the tasks write their rows here themselves (any node)
    quarantine_out: manifest.PartSink | None


def _fail(part: BlockPartial, column: str | None, check: str, level: str, count: int,
          samples: list[Any] = (), row_ids: list[Any] = (), detail: str = "") -> None:  # type: ignore[assignment]
    acc = part.failures.setdefault((column, check, level), _Acc(detail=detail))
    acc.count += count
    acc.samples.extend(list(samples)[: MAX_SAMPLES - len(acc.samples)])
    acc.row_ids.extend(list(row_ids)[: MAX_SAMPLES - len(acc.row_ids)])


def _as_py(values: pa.Array | np.ndarray, mask: np.ndarray) -> list[Any]:
    idx = np.flatnonzero(mask)[:MAX_SAMPLES]
    if isinstance(values, np.ndarray):
        return [v.item() if hasattr(v, "item") else v for v in values[idx]]
    return values.take(pa.array(idx)).to_pylist()


def _row_check(part: BlockPartial, tbl: pa.Table, plan: CheckPlan, col: ColumnSchema,
               check: str, mask: np.ndarray, values: Any, checks: list[tuple[np.ndarray, str]]) -> None:
    n_bad = int(mask.sum())
    if not n_bad:
        return
    ids = _as_py(tbl.column(plan.row_id_column), mask) if plan.row_id_column in tbl.column_names else []
    _fail(part, col.name, check, "row", n_bad, _as_py(values, mask), ids)
    checks.append((mask, f"{col.name}: {check}"))


def _soft_check(part: BlockPartial, tbl: pa.Table, plan: CheckPlan, col: ColumnSchema, constraint: str,
                mask: np.ndarray, values: Any) -> None:
    """Count values outside a soft constraint (level "shift"); the rows stay valid."""
    n_out = int(mask.sum())
    if n_out:
        ids = _as_py(tbl.column(plan.row_id_column), mask) if plan.row_id_column in tbl.column_names else []
        _fail(part, col.name, constraint, "shift", n_out, _as_py(values, mask), ids)


def _range_checks(part: BlockPartial, tbl: pa.Table, plan: CheckPlan, col: ColumnSchema,
                  cpart: ColumnPartial, values: np.ndarray, checks: list[tuple[np.ndarray, str]]) -> None:
    """Hard bounds quarantine the rows outside them; soft bounds only count them."""
    if cpart.min is None:
        return
    soft: np.ndarray | None = None
    with np.errstate(invalid="ignore"):  # masks only when the extremes say a row is outside
        for bound, limit, beyond in (("min", col.min, np.less), ("max", col.max, np.greater)):
            extreme = cpart.min if bound == "min" else cpart.max
            if limit is None or not beyond(extreme, limit):
                continue
            mask = beyond(values, limit)
            if bound in col.soft:
                soft = mask if soft is None else soft | mask
            else:
                _row_check(part, tbl, plan, col, f"{bound} {limit:g}", mask, values, checks)
    if soft is not None:
        _soft_check(part, tbl, plan, col, "range", soft, values)


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow array; a row group's single chunk as it is (combine_chunks would copy it)."""
    if isinstance(arr, pa.ChunkedArray):
        return arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    return arr


def _float_values(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls, in memory Arrow allocated (its pool
    keeps freed memory for the next block, where a numpy temporary would be faulted in anew)."""
    flat = _flat(arr)
    if flat.type != pa.float64():
        # safe=False: int64 ids above 2**53 lose precision instead of failing the batch.
        flat = flat.cast(pa.float64(), safe=False)
    if flat.null_count:
        flat = pc.fill_null(flat, float("nan"))
    return flat.to_numpy(zero_copy_only=False)


def _sample_rows(rng: np.random.Generator, n: int, rate: float) -> np.ndarray | None:
    """Positions of the rows whose values go into the statistics' sample (None: all rows)."""
    if rate >= 1:
        return None
    draws = rng.random(n, out=scratch("validation.draws", n, np.float64))
    return np.flatnonzero(np.less(draws, rate, out=scratch("validation.drawn", n, np.bool_)))


def check_block(tbl: pa.Table, plan: CheckPlan) -> tuple[pa.Table | None, pa.Table | None, BlockPartial]:
    """Check one block; returns (valid rows, quarantined rows with _reason, partial).

    The row tables are built only when the plan writes them somewhere."""
    n = tbl.num_rows
    part = BlockPartial(rows=n)
    schema = plan.schema
    present = set(tbl.column_names)
    expected = {c.name for c in schema.columns}
    for extra in sorted(present - expected) if schema.strict else []:
        _fail(part, extra, "unexpected column", "schema", n,
              detail=f"column {extra!r} is not in the schema (strict)")
    rng = np.random.default_rng([plan.seed, n, zlib.crc32(repr(tbl.slice(0, 2).to_pylist()).encode())])
    sample_rows = _sample_rows(rng, n, plan.sample_rate)
    row_checks: list[tuple[np.ndarray, str]] = []
    for col in schema.columns:
        if col.name not in present:
            if col.required:
                _fail(part, col.name, "missing column", "schema", n,
                      detail=f"required column {col.name!r} is missing")
            continue
        arr = tbl.column(col.name)
        if not type_matches(col.type, arr.type):
            _fail(part, col.name, "type", "schema", n, samples=arr.slice(0, 3).to_pylist(),
                  detail=f"expected {col.type}, got {arr.type} ({arrow_kind(arr.type)})")
            continue
        nulls = arr.null_count
        if col.type in ("int", "float"):
            values = _float_values(arr)  # nulls as NaN; NaN values count as missing too
            missing = scratch("validation.missing", n, np.bool_)
            np.isnan(values, out=missing)
            n_missing = int(np.count_nonzero(missing))
            kept, sample = values, None if sample_rows is None else values[sample_rows]
            if n_missing:
                present_mask = np.logical_not(missing, out=missing)
                kept = np.compress(present_mask, values, out=scratch("validation.kept", n - n_missing,
                                                                     np.float64))
                sample = None if sample is None else sample[~np.isnan(sample)]
            part.columns[col.name] = numeric_partial(kept, col.type, n_missing, plan.edges.get(col.name),
                                                     None, sample=sample)
            _range_checks(part, tbl, plan, col, part.columns[col.name], values, row_checks)
        elif col.type in ("category", "bool", "string"):
            flat = _flat(arr)
            if pa.types.is_null(flat.type):  # all null: nothing to count or match
                part.columns[col.name] = ColumnPartial(type=col.type, count=0, nulls=n)
                continue
            cp = ColumnPartial(type=col.type, count=n - nulls, nulls=nulls)
            part.columns[col.name] = cp
            if col.type != "string" or col.domain is not None:
                # Counting and domain checks on dictionary indices: one bincount and one
                # lookup per block instead of a hash of every string.
                enc = flat if pa.types.is_dictionary(flat.type) else pc.dictionary_encode(flat)
                # Booleans as the schema writes them: "true" / "false".
                values = [str(v).lower() if isinstance(v, bool) else str(v)
                          for v in enc.dictionary.to_pylist()]
                k = len(values)
                codes = (enc.indices.fill_null(k) if nulls else enc.indices).to_numpy(zero_copy_only=False)
                # bincount wants intp: converting the int32 codes in a reused buffer, not a new one.
                idx = scratch("validation.codes", n, np.intp)
                np.copyto(idx, codes)
                counts = np.bincount(idx, minlength=k + 1)
                cp.cats = Counter({v: int(c) for v, c in zip(values, counts[:k], strict=True) if c})
                if col.domain is not None:
                    allowed = set(col.domain)
                    outside = np.array([v not in allowed for v in values] + [False], dtype=bool)
                    if outside[:k][counts[:k] > 0].any():
                        unseen = outside[idx]
                        if "domain" in col.soft:
                            _soft_check(part, tbl, plan, col, "domain", unseen, flat)
                        elif col.max_unseen_fraction == 0:
                            _row_check(part, tbl, plan, col, "domain", unseen, flat, row_checks)
                        else:
                            _fail(part, col.name, "unseen share", "dataset", int(unseen.sum()),
                                  _as_py(flat, unseen))
            if col.regex is not None and col.type == "string":
                text = flat.cast(flat.type.value_type) if pa.types.is_dictionary(flat.type) else flat
                ok = pc.match_substring_regex(text, pattern=f"^(?:{col.regex})$").fill_null(True)
                bad = pc.invert(ok).to_numpy(zero_copy_only=False)
                _row_check(part, tbl, plan, col, "regex", bad, flat, row_checks)
        else:  # timestamp
            cp = ColumnPartial(type=col.type, count=n - nulls, nulls=nulls)
            if n - nulls:
                mm = pc.min_max(arr)
                cp.min, cp.max = mm["min"].as_py(), mm["max"].as_py()
            part.columns[col.name] = cp
        if col.unique:
            vals = arr.drop_null().to_pandas()
            part.hashes[col.name] = pd.util.hash_array(vals.to_numpy())
    bad = np.zeros(n, dtype=bool)
    for mask, _ in row_checks:
        bad |= mask
    part.quarantined = int(bad.sum())
    part.valid = n - part.quarantined
    if plan.valid_out is None and plan.quarantine_out is None:
        return None, None, part
    if part.quarantined:
        reasons = np.full(part.quarantined, "", dtype=object)
        for mask, label in row_checks:
            sub = mask[bad]
            reasons[sub] = reasons[sub] + np.where(reasons[sub] == "", "", "; ") + label
        quarantined = tbl.filter(pa.array(bad)).append_column(REASON, pa.array(reasons, pa.string()))
        valid = tbl.filter(pa.array(~bad))
    else:
        quarantined, valid = tbl.slice(0, 0).append_column(REASON, pa.array([], pa.string())), tbl
    return valid, quarantined, part


def _write(part: BlockPartial, output: str, table: pa.Table | None, sink: manifest.PartSink | None,
           key: str | None = None) -> None:
    """Write one block's rows as a part of `sink` and note it in the partial (the driver's
    manifest lists exactly the parts the partials report). A key derived from the input makes
    a retried task overwrite its own earlier part instead of adding one."""
    if sink is None or table is None or table.num_rows == 0:
        return
    part.written.setdefault(output, []).append(sink.write_table(table, key or uuid.uuid4().hex))


def _block_task(plan: CheckPlan):  # noqa: ANN202
    def run(batch: pa.Table) -> pa.Table:
        valid, quarantined, part = check_block(batch, plan)
        _write(part, "valid", valid, plan.valid_out)
        _write(part, "quarantine", quarantined, plan.quarantine_out)
        return pa.table({"partial": pa.array([pickle.dumps(part)], pa.binary())})

    return run


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
            _fail(total, key[0], key[1], key[2], acc.count, acc.samples, acc.row_ids, acc.detail)
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


def _shift(col: ColumnSchema, constraint: str, acc: _Acc, rows: int, stats: ColumnStats | None) -> Shift:
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
    out = ds.map_batches(_block_task(plan), batch_format="pyarrow", batch_size=None,
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
        _write(part, "valid", valid, plan.valid_out, name)
        _write(part, "quarantine", quarantined, plan.quarantine_out, name)
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
