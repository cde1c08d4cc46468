"""Schema inference and type matching.

A schema is inferred from a reference batch once, written as commented YAML, and then
reviewed by a person: inference proposes, a human decides. Ranges come from the
0.1% / 99.9% quantiles widened by a margin, so that a fresh batch of the same
distribution stays inside while a unit change (x100) or a sign flip does not.

What inference reads off the data's values (numeric ranges, small string domains) is
marked `soft`: one day's values say what was seen, not what is valid, and a pipeline
whose inferred range quarantined every larger item after a covariate shift could never
adapt (TFDV does not infer numeric ranges for this reason). Values outside a soft
constraint are counted and reported as a shift; types, required columns, nullability and
anything a person wrote stay hard.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from mlplatform.spec import ColumnSchema, ColumnType, SchemaSpec

MAX_DOMAIN = 50  # more distinct strings than this is free text / an id, not a category
RANGE_MARGIN = 0.25  # of the p0.1..p99.9 span, on each side
SOFTENABLE = ("min", "max", "domain")  # the constraints inference reads off the values
SOFT_COMMENT = "soft: reported as a shift, not enforced; delete to enforce"


def arrow_kind(t: pa.DataType) -> ColumnType:
    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    return "string"


def type_matches(expected: ColumnType, actual: pa.DataType) -> bool:
    """Whether a column's Arrow type satisfies the schema type (int widens to float)."""
    if pa.types.is_null(actual):  # an all-null column has no type to disagree with
        return True
    got = arrow_kind(actual)
    if expected == "float":
        return got in ("float", "int")
    if expected in ("category", "string"):
        return got in ("category", "string") and (
            not pa.types.is_dictionary(actual) or pa.types.is_string(actual.value_type)
            or pa.types.is_large_string(actual.value_type))
    return got == expected


def is_numeric(column: ColumnSchema) -> bool:
    return column.type in ("int", "float")


def _round(value: float, is_int: bool) -> float:
    if is_int:
        return float(math.floor(value)) if value < 0 else float(math.ceil(value))
    digits = max(0, 3 - int(math.floor(math.log10(abs(value) + 1e-12))))
    return round(value, digits)


def infer_schema(table: pa.Table, *, entity: str | None = None, timestamp: str | None = None,
                 label: str | None = None) -> tuple[SchemaSpec, dict[str, str]]:
    """Propose a schema for `table`; also returns a comment per column explaining it."""
    columns: list[ColumnSchema] = []
    notes: dict[str, str] = {}
    n = max(table.num_rows, 1)
    for name in table.column_names:
        col = table.column(name)
        nulls = col.null_count
        null_frac = nulls / n
        kind = arrow_kind(col.type)
        fields: dict[str, Any] = {"name": name, "type": kind}
        note = f"{n - nulls} values, {null_frac:.1%} null"
        if null_frac > 0:
            fields["max_null_fraction"] = min(1.0, round(null_frac * 2 + 0.01, 3))
        if kind == "string" and name not in (entity, timestamp):
            distinct = pc.count_distinct(col).as_py()
            if 0 < distinct <= MAX_DOMAIN:
                kind = "category"
                fields["type"] = kind
                values = pc.unique(col.drop_null()).to_pylist()
                fields["domain"] = sorted(str(v) for v in values)
                fields["soft"] = ["domain"]
                note += f", {distinct} categories"
            else:
                note += f", {distinct} distinct values"
        elif kind == "category":
            fields["domain"] = sorted(str(v) for v in pc.unique(col.drop_null().cast(pa.string()))
                                      .to_pylist())
            fields["soft"] = ["domain"]
        elif kind in ("int", "float") and n - nulls > 0:
            values = col.drop_null().cast(pa.float64(), safe=False)
            lo, hi = pc.quantile(values, q=[0.001, 0.999]).to_pylist()
            vmin, vmax = pc.min(values).as_py(), pc.max(values).as_py()
            span = (hi - lo) or abs(hi) or 1.0
            low, high = lo - RANGE_MARGIN * span, hi + RANGE_MARGIN * span
            if vmin >= 0 and low < 0:
                low = 0.0  # a non-negative quantity stays non-negative
            fields["min"], fields["max"] = _round(low, kind == "int"), _round(high, kind == "int")
            fields["soft"] = ["min", "max"]
            note += f", observed {vmin:g}..{vmax:g} (p0.1 {lo:g}, p99.9 {hi:g})"
        if name == label:
            fields["serving"] = False
            note += "; the label: absent at serving time"
        if name == entity:
            note += "; the entity key"
        if name == timestamp:
            note += "; the event timestamp"
        columns.append(ColumnSchema.model_validate(fields))
        notes[name] = note
    return SchemaSpec(columns=columns, strict=True, min_rows=1), notes


def soften(schema: SchemaSpec) -> SchemaSpec:
    """The schema with every range and domain soft, as inference writes them.

    For schemas the platform inferred and recorded before `soft` existed: nobody wrote
    those bounds, so they must not stop a run either."""
    columns = [c.model_copy(update={"soft": [k for k in SOFTENABLE if getattr(c, k) is not None]})
               for c in schema.columns]
    return schema.model_copy(update={"columns": columns})


def schema_yaml(schema: SchemaSpec, notes: dict[str, str] | None = None, source: str = "") -> str:
    """A commented YAML rendering meant to be read and edited by a person."""
    notes = notes or {}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Schema inferred by mlplatform on {stamp}{' from ' + source if source else ''}.",
        "# Review it. Enforced (a batch that breaks them stops the run): types, required columns,",
        "# strict, max_null_fraction (twice the observed null share plus 1%).",
        "# Soft (values outside are counted and reported as a shift, never quarantined): what was",
        "# read off the values, listed in each column's `soft`: ranges (the p0.1..p99.9 quantiles",
        "# widened by 25%) and small string domains (the categories seen). To enforce one, delete",
        "# it from `soft` (or the whole `soft` line).",
        f"strict: {str(schema.strict).lower()}   # an extra column is a schema break",
        f"min_rows: {schema.min_rows if schema.min_rows is not None else 'null'}",
        f"max_rows: {schema.max_rows if schema.max_rows is not None else 'null'}",
        "columns:",
    ]
    for col in schema.columns:
        if col.name in notes:
            lines.append(f"  # {notes[col.name]}")
        data = col.model_dump(exclude_defaults=True)
        data.setdefault("type", col.type)
        body = yaml.safe_dump(data, default_flow_style=None, sort_keys=False, width=100).rstrip()
        first, *rest = (f"{line}   # {SOFT_COMMENT}" if line.startswith("soft:") else line
                        for line in body.splitlines())
        lines.append(f"  - {first}")
        lines.extend(f"    {line}" for line in rest)
    return "\n".join(lines) + "\n"
