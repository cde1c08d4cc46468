"""The metadata store's tables, as SQLAlchemy models.

The schema a database actually has is built by the Alembic revisions in `migrations/`;
these models are what the code reads and writes, and a test checks that the two agree
(`alembic check`-style autogenerate comparison). A change here needs a new revision
(see migrations/README).
"""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class ContextRow(Base):
    __tablename__ = "context"
    __table_args__ = (UniqueConstraint("type", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(32))  # pipeline | pipeline_run
    name: Mapped[str] = mapped_column(String(255))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("context.id"), index=True)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ExecutionRow(Base):
    __tablename__ = "execution"
    id: Mapped[int] = mapped_column(primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("context.id"), index=True)
    step: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str] = mapped_column(String(255), default=socket.gethostname)
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class ArtifactRow(Base):
    __tablename__ = "artifact"
    __table_args__ = (Index("ix_artifact_kind_hash", "kind", "content_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str | None] = mapped_column(String(128))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class EventRow(Base):
    __tablename__ = "event"
    id: Mapped[int] = mapped_column(primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("execution.id"), index=True)
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifact.id"), index=True)
    type: Mapped[str] = mapped_column(String(8))  # INPUT | OUTPUT
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AlertRow(Base):
    __tablename__ = "alert"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    pipeline: Mapped[str] = mapped_column(String(255), index=True)
    run_id: Mapped[str | None] = mapped_column(String(255))
    step: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))  # info | warning | critical
    kind: Mapped[str] = mapped_column(String(64))  # schema_break | invalid_rows | drift | ...
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Where it came from (validation | drift | live_drift | quality | guardrail | anomaly | run |
    # trigger | infra | ingest) and a link to what caused it (a report, a run, a rollout).
    source: Mapped[str] = mapped_column(String(32), default="pipeline", server_default="pipeline",
                                        index=True)
    link: Mapped[str | None] = mapped_column(Text)
    acked_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    acked_by: Mapped[str | None] = mapped_column(String(255))
    # The webhook's outcome: None (no webhook), "sent", or "failed: <reason>" after the retries.
    notified: Mapped[str | None] = mapped_column(Text)


class MonitorResultRow(Base):
    """One observation of a served model's live behaviour (mlplatform.monitoring): a feature's
    live drift score, a realised or estimated quality metric over a window. Kept for history:
    the anomaly detector and `platformctl monitor` read them back."""

    __tablename__ = "monitor_result"
    __table_args__ = (Index("ix_monitor_result_pipeline_kind", "pipeline", "kind", "created_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    pipeline: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # live_drift | quality | quality_estimate
    model_version: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))  # the feature, or the metric
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(default=False)
    window_start: Mapped[dt.datetime | None] = mapped_column(DateTime)
    window_end: Mapped[dt.datetime | None] = mapped_column(DateTime)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TriggerStateRow(Base):
    """What a trigger has already acted on (files seen, the last scheduled time fired), changed
    only by compare-and-set on `revision`: of two watchers, one wins each change."""

    __tablename__ = "trigger_state"
    pipeline: Mapped[str] = mapped_column(String(255), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[int] = mapped_column(default=0)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TriggerFireRow(Base):
    """Every time a trigger fired: why, and the run it started (or why it started none)."""

    __tablename__ = "trigger_fire"
    id: Mapped[int] = mapped_column(primary_key=True)
    fired_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    pipeline: Mapped[str] = mapped_column(String(255), index=True)
    trigger: Mapped[str] = mapped_column(String(64))  # new_data | schedule | drift | quality
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))  # submitted | skipped | failed
    run_id: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(255))
    watcher: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ActiveRunRow(Base):
    """The one run a pipeline's triggers have in flight: inserting the row is the claim (the
    primary key lets one watcher win), deleting it the release once the run has ended."""

    __tablename__ = "active_run"
    pipeline: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(255))
    cause: Mapped[str] = mapped_column(Text)
    watcher: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ChampionHistoryRow(Base):
    """Every change of a model's champion, in the order the changes committed.

    Append-only: each row's `from_version` is the previous row's `to_version` (the
    compare-and-set guarantees it), so the history of a model is a chain.
    """

    __tablename__ = "champion_history"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused: they order the chain
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # promote | manual | rollback | adopt
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class ChampionRow(Base):
    """Who is champion: one row per registered model, changed only by compare-and-set."""

    __tablename__ = "champion"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    change_id: Mapped[int] = mapped_column(ForeignKey("champion_history.id"))


class RolloutRow(Base):
    """A rollout of a pipeline's challenger (mlplatform.rollout): the whole state as JSON, changed
    only by compare-and-set on `revision`. `active_pipeline` is the pipeline's name while the
    rollout runs or is paused, NULL after: its unique index lets one rollout per pipeline be
    active (NULLs never collide, on SQLite and PostgreSQL alike)."""

    __tablename__ = "rollout"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(255), index=True)
    active_pipeline: Mapped[str | None] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column()
    state: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
