"""`platformctl monitor NAME`: one pipeline's live behaviour on one screen.

What is served (versions, weights, variants) comes from Serve; traffic (rate, errors, p50/p99)
from the prediction log of the last few minutes, which every replica writes, so the figures cover
the whole deployment rather than the one replica an HTTP status call would reach; live quality
and drift from what the monitor recorded (mlplatform.monitoring.quality / live_drift); alerts
from the metadata store. A part that cannot be read (the cluster is down, nothing logged yet)
says so in its place instead of failing the view: a person watching an outage still needs the
rest of the screen.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Group
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from mlplatform.metadata.schema import MonitorResultRow
from mlplatform.metadata.store import Alert
from mlplatform.services import Services


class ServedVersion(BaseModel):
    version: str
    weight: int
    variant: str


class Traffic(BaseModel):
    """One variant's requests over the window, from the prediction log."""

    variant: str
    versions: list[str]
    requests: int
    errors: int
    error_rate: float
    rate_per_s: float
    p50_ms: float | None
    p99_ms: float | None


class QualityFigure(BaseModel):
    kind: str  # quality (realised, from feedback) | quality_estimate (from the scores)
    metric: str
    value: float | None
    model_version: str | None
    variant: str | None
    at: dt.datetime
    window_start: dt.datetime | None
    window_end: dt.datetime | None
    flagged: bool


class DriftFigure(BaseModel):
    feature: str
    score: float | None
    threshold: float | None
    drifted: bool


class MonitorSnapshot(BaseModel):
    pipeline: str
    at: dt.datetime
    window_s: float
    served: list[ServedVersion] = Field(default_factory=list)
    serving_note: str = ""
    traffic: list[Traffic] = Field(default_factory=list)
    traffic_note: str = ""
    quality: list[QualityFigure] = Field(default_factory=list)
    drift_at: dt.datetime | None = None
    drift_model_version: str | None = None
    drift: list[DriftFigure] = Field(default_factory=list)
    drifted_features: list[str] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _served(services: Services, name: str) -> tuple[list[ServedVersion], str, str]:
    """(versions, note, the feature service the log is kept under)."""
    from mlplatform.errors import PlatformError
    from mlplatform.serving.client import ServeControl

    try:
        control = ServeControl(services.settings)
        state = control.app(name)
        if state is None:
            return [], f"{name} is not served", "all_features"
        spec = control.deployed_spec(name)
        service = (spec.model.feature_service if spec else None) or "all_features"
        cfg = state.config
        versions = [ServedVersion(version=s.version, weight=s.weight, variant=cfg.variant(s.version))
                    for s in (cfg.versions if cfg else [])]
        return versions, f"{state.status}, {state.replicas} replicas", service
    except PlatformError as exc:
        return [], f"serving unknown: {exc.message}", "all_features"


def _traffic(services: Services, name: str, service: str, since: dt.datetime,
             until: dt.datetime) -> list[Traffic]:
    from mlplatform.serving.predictions import read_predictions

    log = read_predictions(services.settings.storage_uri, name, service, since=since, until=until,
                           features=False)
    if not len(log):
        return []
    seconds = max((until - since).total_seconds(), 1.0)
    out = []
    for variant, rows in log.groupby("variant", sort=True):
        errors = int(rows["error"].notna().sum()) if "error" in rows else 0
        latency = rows["latency_ms"].dropna().to_numpy(dtype=float)
        p50, p99 = (np.percentile(latency, [50, 99]) if latency.size else (None, None))
        out.append(Traffic(variant=str(variant), versions=sorted({str(v) for v in rows["version"].dropna()}),
                           requests=len(rows), errors=errors, error_rate=errors / len(rows),
                           rate_per_s=len(rows) / seconds,
                           p50_ms=None if p50 is None else float(p50),
                           p99_ms=None if p99 is None else float(p99)))
    return out


def _quality(services: Services, name: str) -> list[QualityFigure]:
    """The newest figure of each (kind, metric, version, variant)."""
    with services.metadata.session() as s:
        rows = s.scalars(select(MonitorResultRow)
                         .where(MonitorResultRow.pipeline == name,
                                MonitorResultRow.kind.in_(("quality", "quality_estimate")))
                         .order_by(MonitorResultRow.id.desc()).limit(200)).all()
        seen: set[tuple[Any, ...]] = set()
        out = []
        for r in rows:
            key = (r.kind, r.name, r.model_version, r.variant)
            if key in seen:
                continue
            seen.add(key)
            out.append(QualityFigure(kind=r.kind, metric=r.name, value=r.value, model_version=r.model_version,
                                     variant=r.variant, at=r.created_at, window_start=r.window_start,
                                     window_end=r.window_end, flagged=r.flagged))
    return sorted(out, key=lambda q: (q.variant or "", q.metric, q.kind))


def _drift(services: Services, name: str) -> tuple[dt.datetime | None, str | None, list[DriftFigure]]:
    """The features of the newest live-drift check (rows written together share its window end)."""
    with services.metadata.session() as s:
        newest = s.execute(select(func.max(MonitorResultRow.id))
                           .where(MonitorResultRow.pipeline == name,
                                  MonitorResultRow.kind == "live_drift")).scalar()
        if newest is None:
            return None, None, []
        last = s.get(MonitorResultRow, newest)
        assert last is not None
        rows = s.scalars(select(MonitorResultRow)
                         .where(MonitorResultRow.pipeline == name, MonitorResultRow.kind == "live_drift",
                                MonitorResultRow.window_end == last.window_end,
                                MonitorResultRow.created_at >= last.created_at - dt.timedelta(minutes=5))
                         .order_by(MonitorResultRow.name)).all()
        figures = {r.name: DriftFigure(feature=r.name, score=r.value, threshold=r.threshold,
                                       drifted=r.flagged) for r in rows}
        return last.created_at, last.model_version, list(figures.values())


def _alerts(services: Services, name: str, limit: int) -> list[Alert]:
    try:
        from mlplatform.monitoring.alerts import list_alerts
    except ImportError:  # pragma: no cover - the alerts module ships with this one
        return services.metadata.alerts(name, limit)
    return list_alerts(services, pipeline=name, limit=limit)


def snapshot(services: Services, name: str, *, window_s: float = 300.0, alerts: int = 8,
             now: dt.datetime | None = None) -> MonitorSnapshot:
    now = now or _utcnow()
    since = now - dt.timedelta(seconds=window_s)
    served, note, service = _served(services, name)
    snap = MonitorSnapshot(pipeline=name, at=now, window_s=window_s, served=served, serving_note=note)
    try:
        snap.traffic = _traffic(services, name, service, since, now)
        if not snap.traffic:
            snap.traffic_note = f"no requests logged in the last {window_s:.0f}s"
    except Exception as exc:  # noqa: BLE001 - one unreadable part must not blank the screen
        snap.traffic_note = f"prediction log unreadable: {type(exc).__name__}: {exc}"
    snap.quality = _quality(services, name)
    snap.drift_at, snap.drift_model_version, snap.drift = _drift(services, name)
    snap.drifted_features = [d.feature for d in snap.drift if d.drifted]
    snap.alerts = _alerts(services, name, alerts)
    return snap


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(snap: MonitorSnapshot) -> Group:
    """The snapshot as rich renderables (the live view redraws this every interval)."""
    parts: list[Any] = [Text.from_markup(
        f"[bold]{snap.pipeline}[/]  {snap.at:%Y-%m-%d %H:%M:%S} UTC  window {snap.window_s:.0f}s  "
        f"[dim]{snap.serving_note}[/]")]
    served = Table("version", "weight", "variant", title="served", title_justify="left")
    for v in snap.served:
        served.add_row(f"v{v.version}", f"{v.weight}%", v.variant)
    parts.append(served)
    traffic = Table("variant", "versions", "requests", "req/s", "errors", "error rate", "p50 ms", "p99 ms",
                    title="traffic (prediction log)", title_justify="left")
    for t in snap.traffic:
        colour = "red" if t.error_rate > 0.01 else "white"
        traffic.add_row(t.variant, ",".join(f"v{v}" for v in t.versions), str(t.requests),
                        f"{t.rate_per_s:.2f}", str(t.errors), f"[{colour}]{t.error_rate:.2%}[/]",
                        _ms(t.p50_ms), _ms(t.p99_ms))
    parts.append(traffic)
    if snap.traffic_note:
        parts.append(Text(snap.traffic_note, style="dim"))
    quality = Table("variant", "version", "metric", "realised", "estimated (CBPE)", "at",
                    title="live quality", title_justify="left")
    pairs: dict[tuple[str, str, str], dict[str, QualityFigure]] = {}
    for q in snap.quality:
        pairs.setdefault((q.variant or "-", q.model_version or "-", q.metric), {})[q.kind] = q
    for (variant, version, metric), kinds in pairs.items():
        def cell(kind: str, kinds: dict[str, QualityFigure] = kinds) -> str:
            q = kinds.get(kind)
            if q is None or q.value is None:
                return "-"
            return f"[red]{q.value:.4f}[/]" if q.flagged else f"{q.value:.4f}"
        at = max(q.at for q in kinds.values())
        quality.add_row(variant, f"v{version}" if version != "-" else "-", metric, cell("quality"),
                        cell("quality_estimate"), f"{at:%m-%d %H:%M}")
    parts.append(quality if pairs else Text("live quality: nothing recorded yet (platformctl monitor "
                                            f"quality {snap.pipeline})", style="dim"))
    if snap.drift:
        drift = Table("feature", "score", "threshold", "drifted",
                      title=f"live drift of v{snap.drift_model_version} ({snap.drift_at:%m-%d %H:%M})",
                      title_justify="left")
        for d in snap.drift:
            drift.add_row(d.feature, "-" if d.score is None else f"{d.score:.3f}",
                          "-" if d.threshold is None else f"{d.threshold:g}",
                          "[red]yes[/]" if d.drifted else "no")
        parts.append(drift)
    else:
        parts.append(Text(f"live drift: nothing recorded yet (platformctl monitor drift {snap.pipeline})",
                          style="dim"))
    alerts = Table("id", "when", "severity", "source", "kind", "message", title="recent alerts",
                   title_justify="left")
    for a in snap.alerts:
        colour = {"critical": "red", "warning": "yellow"}.get(a.severity, "white")
        alerts.add_row(str(a.id), f"{a.created_at:%m-%d %H:%M}", f"[{colour}]{a.severity}[/]", a.source,
                       a.kind, Text(a.message[:120]))
    parts.append(alerts)
    return Group(*parts)
