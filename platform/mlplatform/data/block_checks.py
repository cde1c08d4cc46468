"""The per-block work of validation, which runs in Ray tasks (or in the job's own process
below the validate step's threshold): check one block of rows against the schema, split it
into valid and quarantined rows, write both, and return a small partial of failure counts
and statistics for the driver to merge (mlplatform.data.validation).
"""

from __future__ import annotations

import pickle
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlplatform import manifest
from mlplatform.data.schema import arrow_kind, type_matches
from mlplatform.data.stats import ColumnPartial, numeric_partial, scratch
from mlplatform.spec import ColumnSchema, SchemaSpec

MAX_SAMPLES = 5
REASON = "_reason"


@dataclass
class FailureCount:
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
    failures: dict[tuple[str | None, str, str], FailureCount] = field(default_factory=dict)
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


def add_failure(part: BlockPartial, column: str | None, check: str, level: str, count: int,
                samples: list[Any] = (), row_ids: list[Any] = (), detail: str = "") -> None:  # type: ignore[assignment]
    acc = part.failures.setdefault((column, check, level), FailureCount(detail=detail))
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
    add_failure(part, col.name, check, "row", n_bad, _as_py(values, mask), ids)
    checks.append((mask, f"{col.name}: {check}"))


def _soft_check(part: BlockPartial, tbl: pa.Table, plan: CheckPlan, col: ColumnSchema, constraint: str,
                mask: np.ndarray, values: Any) -> None:
    """Count values outside a soft constraint (level "shift"); the rows stay valid."""
    n_out = int(mask.sum())
    if n_out:
        ids = _as_py(tbl.column(plan.row_id_column), mask) if plan.row_id_column in tbl.column_names else []
        add_failure(part, col.name, constraint, "shift", n_out, _as_py(values, mask), ids)


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
        add_failure(part, extra, "unexpected column", "schema", n,
                    detail=f"column {extra!r} is not in the schema (strict)")
    rng = np.random.default_rng([plan.seed, n, zlib.crc32(repr(tbl.slice(0, 2).to_pylist()).encode())])
    sample_rows = _sample_rows(rng, n, plan.sample_rate)
    row_checks: list[tuple[np.ndarray, str]] = []
    for col in schema.columns:
        if col.name not in present:
            if col.required:
                add_failure(part, col.name, "missing column", "schema", n,
                            detail=f"required column {col.name!r} is missing")
            continue
        arr = tbl.column(col.name)
        if not type_matches(col.type, arr.type):
            add_failure(part, col.name, "type", "schema", n, samples=arr.slice(0, 3).to_pylist(),
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
                            add_failure(part, col.name, "unseen share", "dataset", int(unseen.sum()),
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


def write_part(part: BlockPartial, output: str, table: pa.Table | None, sink: manifest.PartSink | None,
               key: str | None = None) -> None:
    """Write one block's rows as a part of `sink` and note it in the partial (the driver's
    manifest lists exactly the parts the partials report). A key derived from the input makes
    a retried task overwrite its own earlier part instead of adding one."""
    if sink is None or table is None or table.num_rows == 0:
        return
    part.written.setdefault(output, []).append(sink.write_table(table, key or uuid.uuid4().hex))


def block_task(plan: CheckPlan):  # noqa: ANN202
    def run(batch: pa.Table) -> pa.Table:
        valid, quarantined, part = check_block(batch, plan)
        write_part(part, "valid", valid, plan.valid_out)
        write_part(part, "quarantine", quarantined, plan.quarantine_out)
        return pa.table({"partial": pa.array([pickle.dumps(part)], pa.binary())})

    return run
