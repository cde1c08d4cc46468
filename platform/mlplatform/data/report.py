"""Validation reports: a per-column summary, JSON for scripts, self-contained HTML for people.

The HTML embeds its plots as base64 PNGs (matplotlib, Agg backend), so the one file
can be mailed or attached to an alert and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from pydantic import BaseModel

from mlplatform.data.stats import DatasetStats
from mlplatform.data.validation import ValidationResult
from mlplatform.spec import SchemaSpec


class ColumnRow(BaseModel):
    column: str
    type: str
    null_fraction: float | None
    checks: list[str]
    failures: list[str]
    drift_method: str | None = None
    drift_statistic: float | None = None
    drifted: bool = False
    verdict: str  # ok | quarantined rows | FAIL | drift


def column_rows(result: ValidationResult, schema: SchemaSpec) -> list[ColumnRow]:
    drift = {d.feature: d for d in (result.drift.features if result.drift else [])}
    rows = []
    names = [c.name for c in schema.columns] + sorted(
        {f.column for f in result.failures if f.column} - {c.name for c in schema.columns})
    by_name = {c.name: c for c in schema.columns}
    for name in names:
        col = by_name.get(name)
        checks = []
        if col is not None:
            checks.append(col.type)
            checks.append(f"nulls<={col.max_null_fraction:g}")
            if col.min is not None or col.max is not None:
                checks.append(f"range[{col.min if col.min is not None else ''}, "
                              f"{col.max if col.max is not None else ''}]")
            if col.domain is not None:
                checks.append(f"domain({len(col.domain)})")
            if col.regex:
                checks.append("regex")
            if col.unique:
                checks.append("unique")
        fails = [f for f in result.failures if f.column == name]
        stats = result.stats.columns.get(name)
        d = drift.get(name)
        verdict = "ok"
        if any(f.level in ("schema", "dataset") for f in fails):
            verdict = "FAIL"
        elif fails:
            verdict = "quarantined rows"
        elif d is not None and d.drifted:
            verdict = "drift"
        rows.append(ColumnRow(
            column=name, type=col.type if col else "-",
            null_fraction=stats.null_fraction if stats else None, checks=checks,
            failures=[f"{f.check}: {f.failing} ({f.fraction:.1%})" for f in fails],
            drift_method=d.method if d else None, drift_statistic=d.statistic if d else None,
            drifted=bool(d and d.drifted), verdict=verdict))
    return rows


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(result: ValidationResult, reference: DatasetStats | None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    for name, cs in result.stats.columns.items():
        fig, ax = plt.subplots(figsize=(4.2, 2.4))
        if cs.numeric and cs.numeric.histogram:
            h = cs.numeric.histogram
            edges = np.asarray(h.edges)
            cur = np.asarray(h.counts, dtype=float)
            ax.stairs(cur / max(cur.sum(), 1), edges, fill=True, alpha=0.5, label="current")
            if reference is not None and name in reference.samples and reference.samples[name].size:
                ref, _ = np.histogram(np.clip(reference.samples[name], edges[0], edges[-1]), bins=edges)
                ax.stairs(ref / max(ref.sum(), 1), edges, label="reference", linewidth=1.5)
        elif cs.categorical:
            cats = [k for k, _ in cs.categorical.top[:12]]
            total = max(sum(cs.categorical.counts.values()), 1)
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [cs.categorical.counts.get(c, 0) / total for c in cats], 0.4, label="current")
            if reference is not None and name in reference.columns and reference.columns[name].categorical:
                rc = reference.columns[name].categorical.counts  # type: ignore[union-attr]
                rt = max(sum(rc.values()), 1)
                ax.bar(x + 0.2, [rc.get(c, 0) / rt for c in cats], 0.4, label="reference")
            ax.set_xticks(x, cats, rotation=45, fontsize=7)
        else:
            plt.close(fig)
            continue
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        out[name] = _png(fig)
        plt.close(fig)
    return out


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def render_html(result: ValidationResult, schema: SchemaSpec, reference: DatasetStats | None,
                title: str) -> str:
    rows = column_rows(result, schema)
    plots = _plots(result, reference)
    e = html.escape
    colour = {"ok": "#2e7d32", "drift": "#ef6c00", "quarantined rows": "#f9a825", "FAIL": "#c62828"}
    table = "".join(
        f"<tr><td>{e(r.column)}</td><td>{e(r.type)}</td>"
        f"<td>{'' if r.null_fraction is None else f'{r.null_fraction:.2%}'}</td>"
        f"<td>{e(', '.join(r.checks))}</td><td>{e('; '.join(r.failures))}</td>"
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
    figures = "".join(f"<figure><img src='data:image/png;base64,{p}' alt='{e(n)}'></figure>"
                      for n, p in plots.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;
font-size:13px}}td,th{{border:1px solid #ddd;padding:4px 8px;text-align:left}}th{{background:#f3f3f3}}
figure{{display:inline-block;margin:4px}}</style></head><body>
<h1>Validation report: {e(title)}</h1>
<p><b>{result.rows_in}</b> rows in: <b>{result.rows_valid}</b> valid, <b>{result.rows_quarantined}</b>
quarantined ({result.invalid_fraction:.2%}). {e(drift_line)}.</p>
<h2>Columns</h2><table><tr><th>column</th><th>type</th><th>nulls</th><th>checks</th><th>failures</th>
<th>drift</th><th>verdict</th></tr>{table}</table>
<h2>Failures</h2>{'<p>none</p>' if not result.failures else
 '<table><tr><th>level</th><th>column</th><th>check</th><th>failing</th><th>fraction</th><th>message</th>'
 '<th>samples</th><th>row ids</th></tr>' + failures + '</table>'}
<h2>Distributions (current vs reference)</h2>{figures}
</body></html>"""


def report_json(result: ValidationResult, schema: SchemaSpec) -> dict[str, Any]:
    return {"rows_in": result.rows_in, "rows_valid": result.rows_valid,
            "rows_quarantined": result.rows_quarantined, "invalid_fraction": result.invalid_fraction,
            "failures": [f.model_dump(mode="json") for f in result.failures],
            "columns": [r.model_dump(mode="json") for r in column_rows(result, schema)],
            "drift": result.drift.model_dump(mode="json") if result.drift else None,
            "statistics": result.stats.model_dump(mode="json")}


def write_reports(result: ValidationResult, schema: SchemaSpec, reference: DatasetStats | None,
                  fs: pafs.FileSystem, folder: str, title: str) -> None:
    fs.create_dir(folder, recursive=True)
    with fs.open_output_stream(f"{folder}/validation.json") as out:
        out.write(json.dumps(report_json(result, schema), indent=1, default=str).encode())
    with fs.open_output_stream(f"{folder}/validation.html") as out:
        out.write(render_html(result, schema, reference, title).encode())
