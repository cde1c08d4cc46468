"""Live quality of the champion: the realised metric once labels arrive, and for classifiers a
CBPE estimate (mlplatform.monitoring.cbpe) from the scores alone before they do.

Labels (feedback) come late and only for some requests, so the two are computed over one
window of served predictions: the realised metric (the spec's `model.metric`, by the same
scikit-learn code the gate uses) over the rows whose feedback has arrived, the estimate over
every row. The estimate assumes calibrated scores and no concept drift, and the report says
when either fails: calibration is checked on the window's labelled rows (the only labelled
rows the live model has), and once labels arrive, a realised metric further than `tolerance`
from the estimate on the same rows is a hint of concept drift (the scores no longer mean what
they meant).

Both are recorded (MonitorResultRow kind "quality" and "quality_estimate"), exported as
metrics, and, given `min_value`, a metric on the wrong side of it raises a "quality" alert
(the realised one; the estimate, said so, while no labels have arrived).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlplatform.evaluation.metrics import greater_is_better, score
from mlplatform.monitoring import metrics
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.monitoring.cbpe import Calibration, Estimate, calibration, estimate
from mlplatform.monitoring.live_drift import monitoring_settings, report_folder, window_bounds, write_report
from mlplatform.monitoring.live_report import quality_html
from mlplatform.monitoring.results import MonitorResult, latest_results, record
from mlplatform.services import Services
from mlplatform.serving.predictions import joined_feedback
from mlplatform.spec import PipelineSpec

__all__ = ["DEFAULT_TOLERANCE", "QualityReport", "latest_results", "run_quality"]

# |realised - estimate| on the same labelled rows beyond this: the estimate's assumptions are in
# doubt. At a few hundred labels the AUC's own sampling noise is ~0.02-0.03, so less would cry wolf.
DEFAULT_TOLERANCE = 0.05


class QualityReport(BaseModel):
    pipeline: str
    model_version: str | None
    window_start: dt.datetime
    window_end: dt.datetime
    metric: str
    rows: int  # served predictions in the window
    labelled: int  # of which feedback has arrived
    realised: float | None = None  # the metric over the labelled rows
    estimated: float | None = None  # CBPE over every row (None: not a binary classifier, or too few)
    estimated_on_labelled: float | None = None  # CBPE over the labelled rows: compared with realised
    estimate: Estimate | None = None
    calibration: Calibration | None = None
    tolerance: float = DEFAULT_TOLERANCE
    diverged: bool | None = None  # realised vs estimate beyond tolerance (None: not comparable)
    min_value: float | None = None
    below_min: bool = False
    alert_id: int | None = None
    report_uri: str | None = None
    notes: list[str] = []
    message: str


def _key(value: object) -> object:
    """A label or an output as compared: numbers by value ("1", "1.0" and 1 are one class)."""
    try:
        return float(str(value))
    except ValueError:
        return str(value)


def _positive(df: pd.DataFrame) -> object | None:
    """The positive class of a binary classifier's log: the output where score >= 0.5 (the
    score is the probability of classes_[1], and the output the argmax)."""
    outputs = df["output"].dropna().map(_key)
    if outputs.nunique() > 2:
        return None
    high = outputs[df.loc[outputs.index, "score"] > 0.5]
    if len(high):
        return high.mode().iloc[0]
    others = set(df["label"].dropna().map(_key)) | set(outputs)
    low = set(outputs)
    rest = sorted(others - low, key=str)
    return rest[0] if rest else None


def _served(services: Services, spec: PipelineSpec, version: str, start: dt.datetime,
            end: dt.datetime) -> pd.DataFrame:
    service = spec.model.feature_service or "all_features"
    df = joined_feedback(services.settings.storage_uri, spec.name, service, since=start, until=end,
                         features=False)
    if df.empty:
        return df
    ts = pd.to_datetime(df["event_ts"], utc=True).dt.tz_localize(None)
    keep = ((ts >= start) & (ts < end) & (df["version"].astype(str) == version)
            & (df["variant"].astype(str) != "shadow") & df["error"].isna())
    return df.loc[keep].reset_index(drop=True)


def run_quality(services: Services, spec: PipelineSpec, *, window_s: float | None = None,
                now: dt.datetime | None = None, alert: bool = True, min_value: float | None = None,
                tolerance: float = DEFAULT_TOLERANCE, version: str | None = None) -> QualityReport:
    """Realised and estimated quality of the champion (or of `version`, e.g. the champion a
    rollout has just replaced) over [now - window, now)."""
    start, end = window_bounds(spec, window_s, now)
    min_rows = monitoring_settings(spec)[1]
    metric, task = spec.model.metric, spec.model.task
    base = {"pipeline": spec.name, "window_start": start, "window_end": end, "metric": metric,
            "tolerance": tolerance, "min_value": min_value}
    version = version or services.models.champion(spec.name)
    if version is None:
        return QualityReport(**base, model_version=None, rows=0, labelled=0,
                             message=f"{spec.name} has no champion: nothing served to measure")
    df = _served(services, spec, version, start, end)
    labelled = df.loc[df["label"].notna()] if len(df) else df
    report = QualityReport(**base, model_version=version, rows=len(df), labelled=len(labelled), message="")
    notes = report.notes
    if task == "classification":
        _classifier(report, df, labelled, min_rows, notes)
    elif len(labelled) >= min_rows:
        y = pd.to_numeric(labelled["label_value"], errors="coerce").to_numpy(float)
        report.realised = score("regression", y, labelled["score"].to_numpy(float))[metric]
        notes.append("no estimate before labels: CBPE estimates classifiers only")
    if len(labelled) < min_rows:
        notes.append(f"{len(labelled)} labelled prediction(s), fewer than {min_rows} (monitoring.min_rows): "
                     "no realised metric yet")
    _judge(report)
    return _publish(services, spec, report, alert)


def _classifier(report: QualityReport, df: pd.DataFrame, labelled: pd.DataFrame, min_rows: int,
                notes: list[str]) -> None:
    if not len(df):
        return
    positive = _positive(df)
    scores = df["score"].to_numpy(float)
    if positive is None or not np.isfinite(scores).any():
        notes.append("no estimate: CBPE here needs a binary classifier's scores")
        return
    if len(df) >= min_rows:
        report.estimate = estimate(scores[np.isfinite(scores)])
        report.estimated = report.estimate.metric(report.metric)
        if report.estimated is None:
            notes.append(f"CBPE does not estimate {report.metric}; see the estimated accuracy and ROC AUC")
    else:
        notes.append(f"{len(df)} prediction(s), fewer than {min_rows} (monitoring.min_rows): no estimate")
    if not len(labelled):
        notes.append("no feedback yet: calibration (the estimate's assumption) is not checked")
        return
    y = (labelled["label"].map(_key) == positive).to_numpy(int)
    s = labelled["score"].to_numpy(float)
    report.calibration = calibration(s, y)
    if report.calibration.note:
        notes.append(report.calibration.note)
    if len(labelled) >= min_rows:
        pred = (labelled["output"].map(_key) == positive).to_numpy(int)
        report.realised = score("classification", y, pred, s)[report.metric]
        report.estimated_on_labelled = estimate(s).metric(report.metric)


def _judge(report: QualityReport) -> None:
    """Divergence (a hint of concept drift), the threshold, and the one-line message."""
    real, est_l = report.realised, report.estimated_on_labelled
    if real is not None and est_l is not None and np.isfinite(real) and np.isfinite(est_l):
        report.diverged = abs(real - est_l) > report.tolerance
        if report.diverged:
            report.notes.append(
                f"realised {report.metric} {real:.3f} is {abs(real - est_l):.3f} from its estimate "
                f"{est_l:.3f} on the same rows, beyond the tolerance {report.tolerance}: a hint of concept "
                "drift (or miscalibration); the estimate is not to be trusted")
    value, estimated = (real, False) if real is not None else (report.estimated, True)
    if report.min_value is not None and value is not None and np.isfinite(value):
        higher = greater_is_better(report.metric)
        report.below_min = value < report.min_value if higher else value > report.min_value
    parts = [f"{report.rows} prediction(s), {report.labelled} labelled"]
    if real is not None:
        parts.append(f"realised {report.metric} {real:.4f}")
    if report.estimated is not None:
        parts.append(f"estimated {report.metric} {report.estimated:.4f} (CBPE)")
    if report.below_min:
        parts.append(f"{'estimated ' if estimated else ''}{report.metric} past the threshold "
                     f"{report.min_value}")
    report.message = "; ".join(parts)


def _publish(services: Services, spec: PipelineSpec, report: QualityReport, alert: bool) -> QualityReport:
    uri = report_folder(services, spec, "quality", report.window_end)
    report.report_uri = f"{uri}/quality.html"
    common = {"pipeline": spec.name, "model_version": report.model_version, "variant": "champion",
              "name": report.metric, "threshold": report.min_value, "window_start": report.window_start,
              "window_end": report.window_end}
    rows = []
    if report.realised is not None:
        rows.append(MonitorResult(**common, kind="quality", value=report.realised,
                                  flagged=report.below_min,
                                  details={"labelled": report.labelled, "rows": report.rows,
                                           "diverged": report.diverged, "report": report.report_uri}))
    if report.estimated is not None or report.estimate is not None:
        est = report.estimate
        rows.append(MonitorResult(
            **common, kind="quality_estimate", value=report.estimated,
            flagged=report.below_min and report.realised is None,
            details={"rows": report.rows, "accuracy": est.accuracy if est else None,
                     "roc_auc": est.roc_auc if est else None,
                     "calibrated": report.calibration.calibrated if report.calibration else None,
                     "ece": report.calibration.ece if report.calibration else None,
                     "diverged": report.diverged, "report": report.report_uri}))
    write_report(services, uri, "quality", quality_html(report), report.model_dump(mode="json"))
    if rows:
        record(services, rows)
    for kind, value in (("quality", report.realised), ("quality_estimate", report.estimated)):
        if value is not None:
            metrics.set_live_quality(spec.name, report.model_version or "", "champion", report.metric, value,
                                     estimated=kind == "quality_estimate")
    if alert and report.below_min:
        estimated = report.realised is None
        value = report.estimated if estimated else report.realised
        found = raise_alert(
            services, pipeline=spec.name, source="quality",
            kind="quality_estimate" if estimated else "quality", severity="warning", link=report.report_uri,
            message=(f"{'estimated (CBPE, no labels yet) ' if estimated else ''}{report.metric} of "
                     f"v{report.model_version} is {value:.4f}, past the threshold {report.min_value} "
                     f"({report.rows} predictions, {report.labelled} labelled)"),
            details={"metric": report.metric, "value": value, "estimated": estimated,
                     "min_value": report.min_value, "model_version": report.model_version,
                     "labelled": report.labelled, "rows": report.rows, "notes": report.notes})
        report.alert_id = found.id
    return report
