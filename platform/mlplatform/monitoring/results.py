"""Live monitoring results in the metadata store (MonitorResultRow): one row per feature's live
drift score and per realised or estimated quality metric over a window.

Kept as history, not overwritten: `platformctl monitor` shows the latest, the anomaly detector
compares a value with its own past, and the quality trigger reads the newest value.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from mlplatform.metadata.schema import MonitorResultRow, utcnow
from mlplatform.services import Services

ResultKind = Literal["live_drift", "quality", "quality_estimate"]


class MonitorResult(BaseModel):
    """One recorded observation (the row as read back)."""

    model_config = ConfigDict(from_attributes=True)
    id: int | None = None
    created_at: dt.datetime | None = None
    pipeline: str
    kind: str
    model_version: str | None = None
    variant: str | None = None
    name: str
    value: float | None = None
    threshold: float | None = None
    flagged: bool = False
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    details: dict[str, Any] = {}


def _finite(value: float | None) -> float | None:
    """NaN (no verdict) is stored as NULL: SQL has no NaN on every backend."""
    return None if value is None or value != value else float(value)


def record(services: Services, results: list[MonitorResult]) -> list[MonitorResult]:
    """Insert the results in one transaction, with one creation time (a window's rows read back
    together: latest_window); returns them with their ids."""
    now = utcnow()
    rows = [MonitorResultRow(created_at=now, pipeline=r.pipeline, kind=r.kind, model_version=r.model_version,
                             variant=r.variant, name=r.name, value=_finite(r.value),
                             threshold=_finite(r.threshold), flagged=r.flagged,
                             window_start=r.window_start, window_end=r.window_end, details=r.details)
            for r in results]
    with services.metadata.session() as s:
        s.add_all(rows)
        s.flush()
        return [MonitorResult.model_validate(row) for row in rows]


def latest_results(services: Services, pipeline: str, kind: ResultKind | str, *, limit: int = 100,
                   since: dt.datetime | None = None, name: str | None = None) -> list[MonitorResult]:
    """The newest results of a kind (newest first), optionally of one feature or metric."""
    query = select(MonitorResultRow).where(MonitorResultRow.pipeline == pipeline,
                                           MonitorResultRow.kind == kind)
    if since is not None:
        query = query.where(MonitorResultRow.created_at >= since)
    if name is not None:
        query = query.where(MonitorResultRow.name == name)
    query = query.order_by(MonitorResultRow.created_at.desc(), MonitorResultRow.id.desc()).limit(limit)
    with services.metadata.session() as s:
        return [MonitorResult.model_validate(row) for row in s.scalars(query)]


def latest_window(services: Services, pipeline: str, kind: ResultKind | str) -> list[MonitorResult]:
    """All results of the newest window of a kind (e.g. every feature of the last live drift
    check), for views that show the current state rather than a history."""
    newest = latest_results(services, pipeline, kind, limit=1)
    if not newest:
        return []
    query = select(MonitorResultRow).where(MonitorResultRow.pipeline == pipeline,
                                           MonitorResultRow.kind == kind,
                                           MonitorResultRow.window_end == newest[0].window_end,
                                           MonitorResultRow.created_at == newest[0].created_at)
    with services.metadata.session() as s:
        return [MonitorResult.model_validate(row) for row in s.scalars(query.order_by(MonitorResultRow.id))]
