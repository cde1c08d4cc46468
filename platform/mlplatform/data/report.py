"""Validation reports: a per-column summary, JSON for scripts, self-contained HTML for people.

The HTML embeds its charts as inline SVG (data/svg_chart.py), so the one file can be
mailed or attached to an alert and opened anywhere.

A shift (many values outside a soft, inferred range or domain) is reported on its own,
apart from invalid rows: its rows were not quarantined and it stops nothing, but a
person should see which columns moved and how far.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from pydantic import BaseModel

from mlplatform import storage
from mlplatform.data import svg_chart
from mlplatform.data.stats import DatasetStats, extend_edges
from mlplatform.data.validation import SHIFT_FRACTION, ValidationResult
from mlplatform.spec import ColumnSchema, SchemaSpec


class ColumnRow(BaseModel):
    column: str
    type: str
    null_fraction: float | None
    checks: list[str]
    failures: list[str]
    drift_method: str | None = None
    drift_statistic: float | None = None
    drifted: bool = False
    shift: list[str] = []  # values outside soft constraints: reported, not quarantined
    verdict: str  # ok | quarantined rows | FAIL | shift | drift


def _soft_mark(col: ColumnSchema, keys: tuple[str, ...]) -> str:
    soft = [k for k in keys if k in col.soft]
    if not soft:
        return ""
    return " soft" if len(soft) == sum(getattr(col, k) is not None for k in keys) else f" soft {soft[0]}"


def _checks(col: ColumnSchema) -> list[str]:
    """The column's checks in a few words; soft ones say so."""
    checks = [col.type, f"nulls<={col.max_null_fraction:g}"]
    if col.min is not None or col.max is not None:
        checks.append(f"range[{col.min if col.min is not None else ''}, "
                      f"{col.max if col.max is not None else ''}]{_soft_mark(col, ('min', 'max'))}")
    if col.domain is not None:
        checks.append(f"domain({len(col.domain)}){_soft_mark(col, ('domain',))}")
    if col.regex:
        checks.append("regex")
    if col.unique:
        checks.append("unique")
    return checks


def column_rows(result: ValidationResult, schema: SchemaSpec) -> list[ColumnRow]:
    drift = {d.feature: d for d in (result.drift.features if result.drift else [])}
    rows = []
    names = [c.name for c in schema.columns] + sorted(
        {f.column for f in result.failures if f.column} - {c.name for c in schema.columns})
    by_name = {c.name: c for c in schema.columns}
    for name in names:
        col = by_name.get(name)
        fails = [f for f in result.failures if f.column == name]
        shifts = [s for s in result.shifts if s.column == name]
        stats = result.stats.columns.get(name)
        d = drift.get(name)
        verdict = "ok"
        if any(f.level in ("schema", "dataset") for f in fails):
            verdict = "FAIL"
        elif fails:
            verdict = "quarantined rows"
        elif any(s.shifted for s in shifts):
            verdict = "shift"
        elif d is not None and d.drifted:
            verdict = "drift"
        rows.append(ColumnRow(
            column=name, type=col.type if col else "-",
            null_fraction=stats.null_fraction if stats else None, checks=_checks(col) if col else [],
            failures=[f"{f.check}: {f.failing} ({f.fraction:.1%})" for f in fails],
            drift_method=d.method if d else None, drift_statistic=d.statistic if d else None,
            drifted=bool(d and d.drifted), shift=[f"{s.constraint}: {s.outside} ({s.fraction:.1%}) outside"
                                                 for s in shifts], verdict=verdict))
    return rows


def shift_line(result: ValidationResult) -> str | None:
    """One sentence naming the shifted columns, for a CLI, a log line or an alert."""
    shifted = [s for s in result.shifts if s.shifted]
    if not shifted:
        return None
    return (f"shift on {', '.join(result.shifted_columns)} (not quarantined): "
            + "; ".join(s.message for s in shifted))


def _density(counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts as a density, so that bins of different widths (coarser tails) compare."""
    return counts / max(counts.sum(), 1) / np.diff(edges)


def _numeric_plot(name: str, cs: Any, reference: DatasetStats | None, col: ColumnSchema | None) -> str:
    """Current and reference on one grid covering both (neither piles into an end bin), with
    the schema's range drawn in."""
    h = cs.numeric.histogram
    edges, cur = np.asarray(h.edges), np.asarray(h.counts, dtype=float)
    ref_values = reference.samples.get(name) if reference is not None else None
    if ref_values is not None and ref_values.size:
        edges, below, above = extend_edges(edges, float(ref_values.min()), float(ref_values.max()))
        cur = np.concatenate([np.zeros(below), cur, np.zeros(above)])
    series = [svg_chart.Series("current", _density(cur, edges))]
    if ref_values is not None and ref_values.size:
        ref, _ = np.histogram(ref_values, bins=edges)
        series.append(svg_chart.Series("reference", _density(ref.astype(float), edges), filled=False))
    lines: list[tuple[float, str]] = []
    if col is not None:
        bounds = [(k, getattr(col, k)) for k in ("min", "max") if getattr(col, k) is not None]
        for i, (key, bound) in enumerate(bounds):
            lines.append((float(bound), "" if i else ("soft range" if key in col.soft else "range")))
    return svg_chart.stairs(name, edges, series, lines)


def plots_of(result: ValidationResult, reference: DatasetStats | None,
             schema: SchemaSpec | None = None) -> dict[str, str]:
    """Each column's chart, current vs reference, as inline SVG."""
    by_name = {c.name: c for c in schema.columns} if schema is not None else {}
    out: dict[str, str] = {}
    for name, cs in result.stats.columns.items():
        if cs.numeric and cs.numeric.histogram:
            out[name] = _numeric_plot(name, cs, reference, by_name.get(name))
        elif cs.categorical:
            cats = [k for k, _ in cs.categorical.top[:12]]
            total = max(sum(cs.categorical.counts.values()), 1)
            shares = np.array([cs.categorical.counts.get(c, 0) / total for c in cats])
            series = [svg_chart.Series("current", shares)]
            if reference is not None and name in reference.columns and reference.columns[name].categorical:
                rc = reference.columns[name].categorical.counts  # type: ignore[union-attr]
                rt = max(sum(rc.values()), 1)
                series.append(svg_chart.Series("reference", np.array([rc.get(c, 0) / rt for c in cats])))
            out[name] = svg_chart.bars(name, cats, series)
    return out


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_html(result: ValidationResult, schema: SchemaSpec, reference: DatasetStats | None,
                title: str) -> str:
    rows = column_rows(result, schema)
    plots = plots_of(result, reference, schema)
    e = html.escape
    colour = {"ok": "#2e7d32", "drift": "#ef6c00", "shift": "#ef6c00", "quarantined rows": "#f9a825",
              "FAIL": "#c62828"}
    table = "".join(
        f"<tr><td>{e(r.column)}</td><td>{e(r.type)}</td>"
        f"<td>{'' if r.null_fraction is None else f'{r.null_fraction:.2%}'}</td>"
        f"<td>{e(', '.join(r.checks))}</td><td>{e('; '.join(r.failures))}</td>"
        f"<td>{e('; '.join(r.shift))}</td>"
        f"<td>{e(r.drift_method or '')} {_num(r.drift_statistic)}</td>"
        f"<td style='color:{colour.get(r.verdict, '#000')};font-weight:bold'>{e(r.verdict)}</td></tr>"
        for r in rows)
    failures = "".join(
        f"<tr><td>{e(f.level)}</td><td>{e(f.column or '')}</td><td>{e(f.check)}</td><td>{f.failing}</td>"
        f"<td>{f.fraction:.2%}</td><td>{e(f.message)}</td><td>{e(json.dumps(f.samples, default=str))}</td>"
        f"<td>{e(json.dumps(f.row_ids, default=str))}</td></tr>" for f in result.failures)
    drift = result.drift
    drift_line = ("no reference: drift not measured" if drift is None else
                  f"{drift.n_drifted} of {drift.n_features} features drifted "
                  f"({drift.drifted_share:.0%}); dataset drift: {'YES' if drift.dataset_drift else 'no'}")
    shifts = "".join(
        f"<tr><td>{e(s.column)}</td><td>{e(s.constraint)}</td><td>{e(s.expected)}</td><td>{s.outside}</td>"
        f"<td>{s.fraction:.2%}</td><td>{_num(s.seen_min)}..{_num(s.seen_max)}</td>"
        f"<td>{'shift' if s.shifted else 'stray values'}</td>"
        f"<td>{e(json.dumps(s.samples, default=str))}</td></tr>" for s in result.shifts)
    shift_line = (f"Shift on {', '.join(result.shifted_columns)}: values outside soft (inferred) "
                  "constraints, reported, not quarantined." if result.shifted_columns else "")
    figures = "".join(f"<figure>{p}</figure>" for p in plots.values())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}th{{background:#f3f3f3}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1>Validation report: {e(title)}</h1>
<p><b>{result.rows_in}</b> rows in: <b>{result.rows_valid}</b> valid, <b>{result.rows_quarantined}</b>
quarantined ({result.invalid_fraction:.2%}). {e(drift_line)}. <b>{e(shift_line)}</b></p>
<h2>Columns</h2><table><tr><th>column</th><th>type</th><th>nulls</th><th>checks</th><th>failures</th>
<th>shift</th><th>drift</th><th>verdict</th></tr>{table}</table>
<h2>Failures</h2>{'<p>none</p>' if not result.failures else
 '<table><tr><th>level</th><th>column</th><th>check</th><th>failing</th><th>fraction</th><th>message</th>'
 '<th>samples</th><th>row ids</th></tr>' + failures + '</table>'}
<h2>Shift</h2><p>Values outside soft constraints (inferred from data: counted and reported, never
quarantined, never a reason to stop; a share of {SHIFT_FRACTION:.0%} or more of the rows is a shift).</p>
{'<p>none</p>' if not result.shifts else
 '<table><tr><th>column</th><th>constraint</th><th>soft bounds</th><th>outside</th><th>fraction</th>'
 '<th>seen</th><th>verdict</th><th>samples</th></tr>' + shifts + '</table>'}
<h2>Distributions (current vs reference)</h2>{figures}
</body></html>"""


def report_json(result: ValidationResult, schema: SchemaSpec) -> dict[str, Any]:
    return {"rows_in": result.rows_in, "rows_valid": result.rows_valid,
            "rows_quarantined": result.rows_quarantined, "invalid_fraction": result.invalid_fraction,
            "failures": [f.model_dump(mode="json") for f in result.failures],
            "shifts": [s.model_dump(mode="json") for s in result.shifts],
            "shifted_columns": result.shifted_columns,
            "columns": [r.model_dump(mode="json") for r in column_rows(result, schema)],
            "drift": result.drift.model_dump(mode="json") if result.drift else None,
            "statistics": result.stats.model_dump(mode="json")}


def write_reports(result: ValidationResult, schema: SchemaSpec, reference: DatasetStats | None,
                  fs: pafs.FileSystem, folder: str, title: str) -> None:
    """Each report published atomically: a reader never sees half a page (storage.publish_file)."""
    storage.put_bytes(fs, f"{folder}/validation.json",
                      json.dumps(report_json(result, schema), indent=1, default=str).encode())
    storage.put_bytes(fs, f"{folder}/validation.html", render_html(result, schema, reference, title).encode())
