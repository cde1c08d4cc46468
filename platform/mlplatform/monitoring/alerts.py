"""One alert model for every source: validation, drift, live drift, quality, guardrails,
anomalies, failed runs, triggers, infrastructure and ingestion.

Every part of the platform raises an alert through `raise_alert`, so that all of them carry
the same fields (a source, a severity, a link to what caused it) and all of them reach the
optional webhook (PLATFORM_ALERT_WEBHOOK). The row is written first and synchronously: the
metadata store is the record. The webhook is a courtesy on top and runs in the background
(monitoring/webhook.py): an unreachable receiver never fails or slows a pipeline; its outcome
is written to the alert's `notified` column.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel
from sqlalchemy import select

from mlplatform.errors import InputError
from mlplatform.metadata.schema import AlertRow, utcnow
from mlplatform.metadata.store import Alert

if TYPE_CHECKING:
    from mlplatform.services import Services

AlertSource = Literal["validation", "drift", "live_drift", "quality", "guardrail", "anomaly",
                      "run", "trigger", "infra", "ingest"]
Severity = Literal["info", "warning", "critical"]
SOURCES: tuple[str, ...] = get_args(AlertSource)
# Severities in increasing order: `--severity warning` means "warning or worse".
SEVERITIES: tuple[str, ...] = get_args(Severity)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InputError(f"{field} {value!r}: expected one of {', '.join(allowed)}")


def raise_alert(services: Services, *, pipeline: str, source: AlertSource, kind: str,
                severity: Severity, message: str, run_id: str | None = None,
                step: str | None = None, link: str | None = None,
                details: dict[str, Any] | None = None) -> Alert:
    """Record an alert, then hand it to the webhook (if one is configured) in the background.

    Returns as soon as the row is written; never raises because of the webhook.
    """
    _check_choice("severity", severity, SEVERITIES)
    _check_choice("source", source, SOURCES)
    alert = services.metadata.add_alert(pipeline, severity, kind, message, run_id=run_id, step=step,
                                        details=details, source=source, link=link)
    url = getattr(services.settings, "alert_webhook", None)
    if url:
        from mlplatform.monitoring import webhook

        webhook.notify(services.metadata, url, alert)
    return alert


def alert_failed_run(services: Services, pipeline: str, run_id: str, message: str) -> Alert:
    """A pipeline run that failed is an alert like any other (critical, linked to the run)."""
    return raise_alert(services, pipeline=pipeline, source="run", kind="run_failed",
                       severity="critical", message=message, run_id=run_id, link=f"run:{run_id}")


def _naive_utc(when: dt.datetime) -> dt.datetime:
    """Rows store naive UTC (schema.utcnow); compare like with like."""
    if when.tzinfo is not None:
        return when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def list_alerts(services: Services, *, pipeline: str | None = None, since: dt.datetime | None = None,
                severity: str | None = None, source: str | None = None, unacked: bool = False,
                limit: int = 100) -> list[Alert]:
    """Alerts, newest first. `severity` is a floor: "warning" returns warnings and criticals."""
    if limit < 1:
        raise InputError(f"limit {limit}: expected a positive number")
    query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
    if pipeline:
        query = query.where(AlertRow.pipeline == pipeline)
    if since is not None:
        query = query.where(AlertRow.created_at >= _naive_utc(since))
    if severity is not None:
        _check_choice("severity", severity, SEVERITIES)
        query = query.where(AlertRow.severity.in_(SEVERITIES[SEVERITIES.index(severity):]))
    if source is not None:
        query = query.where(AlertRow.source == source)
    if unacked:
        query = query.where(AlertRow.acked_at.is_(None))
    with services.metadata.session() as s:
        return [Alert.model_validate(r) for r in s.scalars(query)]


class AckResult(BaseModel):
    """An acknowledged alert, and whether someone had acknowledged it before this call."""

    alert: Alert
    already_acked: bool


def ack(services: Services, alert_id: int, *, by: str) -> AckResult:
    """Acknowledge an alert once: a second ack keeps the first one's time and person."""
    with services.metadata.session() as s:
        row = s.get(AlertRow, alert_id)
        if row is None:
            raise InputError(f"alert {alert_id}: no such alert")
        already = row.acked_at is not None
        if not already:
            row.acked_at, row.acked_by = utcnow(), by
            s.flush()
        return AckResult(alert=Alert.model_validate(row), already_acked=already)


def ack_alert(services: Services, alert_id: int, *, by: str) -> Alert:
    """Acknowledge an alert (InputError if there is no such id); idempotent."""
    return ack(services, alert_id, by=by).alert
