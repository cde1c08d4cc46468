"""The two guarantees that make triggers safe under several watchers, on the metadata store.

- At most one run per pipeline that the triggers started: inserting the pipeline's
  `ActiveRunRow` is the claim (its primary key is the pipeline, so of two watchers one insert
  wins and the other fails), deleting it the release once the run's job has ended.
- Each piece of evidence acted on once: what a trigger has seen (batch hashes, the last
  scheduled time, the validate execution it retrained for) lives in `TriggerStateRow` and is
  changed only by compare-and-set on its `revision` (UPDATE ... WHERE revision = read one),
  so of two watchers that read the same state only one changes it, and only that one fires.

Every fire, submitted or not, is a `TriggerFireRow`: `platformctl triggers NAME` reads them.
Times are naive UTC like every other column of the store, and always passed in (`now`), so
that a test drives the clock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from mlplatform.metadata.schema import ActiveRunRow, TriggerFireRow, TriggerStateRow
from mlplatform.metadata.store import MetadataStore

FireStatus = Literal["submitted", "skipped", "failed"]


def naive(now: dt.datetime) -> dt.datetime:
    """The store's form of a time: naive UTC."""
    return now.astimezone(dt.UTC).replace(tzinfo=None) if now.tzinfo else now


class ActiveRun(BaseModel):
    pipeline: str
    run_id: str
    job_id: str | None
    cause: str
    watcher: str | None
    claimed_at: dt.datetime


class TriggerState(BaseModel):
    pipeline: str
    trigger: str
    revision: int  # 0: never written
    state: dict[str, Any]


class Fire(BaseModel):
    id: int
    fired_at: dt.datetime
    pipeline: str
    trigger: str
    reason: str
    status: str
    run_id: str | None
    job_id: str | None
    watcher: str | None
    details: dict[str, Any]


# -- the active-run claim ----------------------------------------------------------------


def claim_run(store: MetadataStore, pipeline: str, run_id: str, *, cause: str, watcher: str,
              now: dt.datetime) -> bool:
    """Claim the pipeline's one trigger-started run; False when a run already holds it."""
    try:
        with store.session() as s:
            s.add(ActiveRunRow(pipeline=pipeline, run_id=run_id, job_id=None, cause=cause,
                               watcher=watcher, claimed_at=naive(now)))
    except IntegrityError:
        return False
    return True


def set_claim_job(store: MetadataStore, pipeline: str, run_id: str, job_id: str) -> None:
    with store.session() as s:
        s.execute(update(ActiveRunRow).where(ActiveRunRow.pipeline == pipeline,
                                             ActiveRunRow.run_id == run_id).values(job_id=job_id))


def active_run(store: MetadataStore, pipeline: str) -> ActiveRun | None:
    with store.session() as s:
        row = s.get(ActiveRunRow, pipeline)
        if row is None:
            return None
        return ActiveRun(pipeline=row.pipeline, run_id=row.run_id, job_id=row.job_id, cause=row.cause,
                         watcher=row.watcher, claimed_at=row.claimed_at)


def release_run(store: MetadataStore, pipeline: str, run_id: str) -> bool:
    """Release the claim if `run_id` still holds it (never another run's claim)."""
    with store.session() as s:
        result = s.execute(delete(ActiveRunRow).where(ActiveRunRow.pipeline == pipeline,
                                                      ActiveRunRow.run_id == run_id))
        return bool(getattr(result, "rowcount", 0))


# -- trigger state, compare-and-set ---------------------------------------------------------


def read_state(store: MetadataStore, pipeline: str, trigger: str) -> TriggerState:
    with store.session() as s:
        row = s.get(TriggerStateRow, (pipeline, trigger))
        if row is None:
            return TriggerState(pipeline=pipeline, trigger=trigger, revision=0, state={})
        return TriggerState(pipeline=pipeline, trigger=trigger, revision=row.revision,
                            state=dict(row.state or {}))


def cas_state(store: MetadataStore, seen: TriggerState, state: dict[str, Any], *,
              now: dt.datetime) -> bool:
    """Write `state` if nobody changed it since `seen` was read; False when another watcher did."""
    try:
        with store.session() as s:
            if seen.revision == 0:
                s.add(TriggerStateRow(pipeline=seen.pipeline, trigger=seen.trigger, revision=1,
                                      state=state, updated_at=naive(now)))
                return True
            result = s.execute(
                update(TriggerStateRow)
                .where(TriggerStateRow.pipeline == seen.pipeline, TriggerStateRow.trigger == seen.trigger,
                       TriggerStateRow.revision == seen.revision)
                .values(revision=seen.revision + 1, state=state, updated_at=naive(now)))
            return bool(getattr(result, "rowcount", 0))
    except IntegrityError:  # both inserted the first state: the other one won
        return False


# -- the record of fires ----------------------------------------------------------------------


def record_fire(store: MetadataStore, *, pipeline: str, trigger: str, reason: str, status: FireStatus,
                now: dt.datetime, watcher: str, run_id: str | None = None, job_id: str | None = None,
                details: dict[str, Any] | None = None) -> Fire:
    with store.session() as s:
        row = TriggerFireRow(fired_at=naive(now), pipeline=pipeline, trigger=trigger, reason=reason,
                             status=status, run_id=run_id, job_id=job_id, watcher=watcher,
                             details=details or {})
        s.add(row)
        s.flush()
        return _fire(row)


def _fire(row: TriggerFireRow) -> Fire:
    return Fire(id=row.id, fired_at=row.fired_at, pipeline=row.pipeline, trigger=row.trigger,
                reason=row.reason, status=row.status, run_id=row.run_id, job_id=row.job_id,
                watcher=row.watcher, details=dict(row.details or {}))


def fires(store: MetadataStore, pipeline: str, *, limit: int = 100) -> list[Fire]:
    """The pipeline's fires, newest first."""
    with store.session() as s:
        rows = s.execute(select(TriggerFireRow).where(TriggerFireRow.pipeline == pipeline)
                         .order_by(TriggerFireRow.id.desc()).limit(limit)).scalars().all()
        return [_fire(r) for r in rows]


def last_submitted_at(store: MetadataStore, pipeline: str) -> dt.datetime | None:
    """When the triggers last started a run: what `min_interval` counts from."""
    with store.session() as s:
        return s.execute(select(TriggerFireRow.fired_at)
                         .where(TriggerFireRow.pipeline == pipeline, TriggerFireRow.status == "submitted")
                         .order_by(TriggerFireRow.fired_at.desc()).limit(1)).scalar_one_or_none()
