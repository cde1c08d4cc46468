"""The live monitoring reports as self-contained HTML, in the look of the validation report
(mlplatform.data.report): the same page style and the same reference-vs-current plots, drawn
by the validation report's own code, so a person reads a live drift report like a batch's.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from mlplatform.data.report import plots_of
from mlplatform.data.stats import DatasetStats
from mlplatform.data.validation import ValidationResult

if TYPE_CHECKING:
    from mlplatform.monitoring.live_drift import LiveDriftReport
    from mlplatform.monitoring.quality import QualityReport

_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}th{background:#f3f3f3}
figure{display:inline-block;margin:4px}</style>"""


def _num(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.4g}"


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{_STYLE}'
            f"</head><body>{body}</body></html>")


def live_drift_html(report: LiveDriftReport, result: ValidationResult | None,
                    reference: DatasetStats | None) -> str:
    """Per feature: method, score, threshold, verdict; then live vs the champion's training data."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(f.feature)}</td><td>{e(f.kind)}</td><td>{e(f.method)}</td><td>{_num(f.statistic)}</td>"
        f"<td>{_num(f.p_value)}</td><td>{_num(f.threshold)}</td><td>{f.reference_size}</td>"
        f"<td>{f.current_size}</td><td style='color:{'#ef6c00' if f.drifted else '#2e7d32'};"
        f"font-weight:bold'>{'drift' if f.drifted else 'ok'}</td><td>{e(f.note)}</td></tr>"
        for f in report.features)
    plots = plots_of(result, reference) if result is not None else {}
    names = {f.feature for f in report.features}
    figures = "".join(f"<figure>{p}</figure>" for n, p in plots.items() if n in names)
    verdict = (f"{len(report.drifted_features)} of {len(report.features)} features drifted "
               f"({report.drifted_share:.0%}, dataset drift at {report.dataset_drift_share:.0%}): "
               f"dataset drift: {'YES' if report.dataset_drift else 'no'}") if report.enough_rows else ""
    title = f"{report.pipeline} v{report.model_version or '-'} live drift"
    body = f"""<h1>Live drift report: {e(title)}</h1>
<p>Served traffic of the champion (v{e(report.model_version or '-')}, shadow copies excluded) from
<b>{report.window_start:%Y-%m-%d %H:%M:%S}</b> to <b>{report.window_end:%Y-%m-%d %H:%M:%S}</b> UTC:
<b>{report.rows}</b> predictions, compared with {e(report.reference)}. {e(verdict)}</p>
<p>{e(report.message)}</p>
<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>method</th><th>score</th><th>p-value</th>
<th>threshold</th><th>reference n</th><th>live n</th><th>verdict</th><th>note</th></tr>{rows}</table>
<h2>Distributions (live vs reference)</h2>{figures or '<p>none</p>'}"""
    return _page(title, body)


def quality_html(report: QualityReport) -> str:
    """Realised and estimated metrics side by side, with every assumption that failed."""
    e = html.escape
    est = report.estimate
    rows = "".join(f"<tr><td>{e(k)}</td><td>{_num(v)}</td></tr>" for k, v in (
        ("predictions", report.rows), ("labelled", report.labelled),
        (f"realised {report.metric}", report.realised),
        (f"estimated {report.metric} (CBPE)", report.estimated),
        ("estimated accuracy", est.accuracy if est else None),
        ("estimated ROC AUC", est.roc_auc if est else None),
        ("calibration error (ECE)", report.calibration.ece if report.calibration else None),
        ("tolerance", report.tolerance)))
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes) or "<li>none</li>"
    title = f"{report.pipeline} v{report.model_version or '-'} live quality"
    body = f"""<h1>Live quality report: {e(title)}</h1>
<p>From <b>{report.window_start:%Y-%m-%d %H:%M:%S}</b> to <b>{report.window_end:%Y-%m-%d %H:%M:%S}</b> UTC.
{e(report.message)}</p><table>{rows}</table><h2>Assumptions and warnings</h2><ul>{notes}</ul>"""
    return _page(title, body)
