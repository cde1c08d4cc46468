"""Who is champion, as a row changed by compare-and-set (the source of truth), and the
history of every change.

`set_champion` reads the model's row, compares it with what the caller expects, appends a
history row and moves the champion, all in one transaction that holds the row: SQLite's
`BEGIN IMMEDIATE` (every transaction of the store takes the write lock up front) or
PostgreSQL's `SELECT ... FOR UPDATE`; a first champion inserted by two writers at once on
PostgreSQL collides on the primary key and the loser gets the same conflict. So two
writers that both read "v2 is champion" cannot both move it: the second gets
`ChampionConflict` and nothing changes. MLflow's `champion` alias only mirrors the row
(mlplatform.models.registry).
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlplatform.errors import PlatformError
from mlplatform.metadata.schema import ChampionHistoryRow, ChampionRow, utcnow

Action = Literal["promote", "manual", "rollback", "adopt"]


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "(none)"


class ChampionConflict(PlatformError):
    """The champion is not the version the caller expected: another change came first."""

    def __init__(self, name: str, expected: str | None, actual: str | None, wanted: str):
        super().__init__(f"model {name}: cannot make v{wanted} champion: the champion is {_v(actual)}, "
                         f"not {_v(expected)} as expected (another change came first); nothing changed")
        self.name, self.expected, self.actual, self.wanted = name, expected, actual, wanted


class ChampionEvent(BaseModel):
    """One change of a model's champion (a row of champion_history)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    from_version: str | None
    to_version: str
    action: str
    reason: str
    actor: str
    run_id: str | None
    created_at: dt.datetime
    written: bool = Field(True, description="False: this call wrote nothing, the champion already was "
                                            "to_version (this change made it so).")


class Champion(BaseModel):
    """A model's champion now, with the change that made it champion."""

    name: str
    version: str
    changed_at: dt.datetime
    change: ChampionEvent

    @property
    def previous(self) -> str | None:
        """The version that held it before this one (what a rollback goes back to)."""
        return self.change.from_version


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _locked_row(s: Session, name: str, lock: bool) -> ChampionRow | None:
    query = select(ChampionRow).where(ChampionRow.name == name)
    return s.scalar(query.with_for_update() if lock else query)


def _out(s: Session, row: ChampionRow) -> Champion:
    change = s.get(ChampionHistoryRow, row.change_id)
    assert change is not None  # a foreign key
    return Champion(name=row.name, version=row.version, changed_at=row.changed_at,
                    change=ChampionEvent.model_validate(change))


def read(s: Session, name: str, *, lock: bool = False) -> Champion | None:
    row = _locked_row(s, name, lock)
    return None if row is None else _out(s, row)


def compare_and_set(s: Session, name: str, version: str, *, expected: str | None, action: Action,
                    reason: str, run_id: str | None, actor: str | None) -> ChampionEvent:
    """Inside the caller's transaction: move the champion from `expected` to `version`."""
    version = str(version)
    row = _locked_row(s, name, lock=True)
    current = None if row is None else _out(s, row)
    actual = current.version if current else None
    if current is not None and actual == version and (
            expected == version or (run_id is not None and current.change.run_id == run_id)):
        # Already done: by this very change (a retried step) or before the caller looked.
        return current.change.model_copy(update={"written": False})
    if actual != expected:
        raise ChampionConflict(name, expected, actual, version)
    now = utcnow()
    change = ChampionHistoryRow(name=name, from_version=actual, to_version=version, action=action,
                                reason=reason, actor=actor or default_actor(), run_id=run_id,
                                created_at=now)
    s.add(change)
    s.flush()
    if row is None:
        # No row to lock yet: a concurrent first champion collides on the primary key
        # (PostgreSQL), which the store turns into the same conflict.
        s.add(ChampionRow(name=name, version=version, changed_at=now, change_id=change.id))
    else:  # the row read (and locked) above; never re-read, which could see a newer commit
        row.version, row.changed_at, row.change_id = version, now, change.id
    s.flush()
    return ChampionEvent.model_validate(change)


def adopt(s: Session, name: str, chain: Sequence[tuple[str, str]], *, actor: str | None) -> ChampionEvent:
    """Inside the caller's transaction: give a model that has no champion row one, with the
    history a home from before the record kept elsewhere (MLflow), as `adopt` changes.

    `chain` is (version, reason) per change, oldest first; the last is the champion. The
    rows form a chain (each change's from_version is the one before's to_version) so that
    a rollback right after an upgrade goes where it went the day before. All of it or
    nothing: when the model has a row already (another process adopted or promoted first),
    ChampionConflict and nothing is written; a concurrent first row on PostgreSQL collides on
    the primary key, which the store turns into the same conflict.
    """
    if not chain:
        raise ValueError(f"model {name}: nothing to adopt")
    row = _locked_row(s, name, lock=True)
    if row is not None:
        raise ChampionConflict(name, None, row.version, chain[-1][0])
    now, who = utcnow(), actor or default_actor()
    previous: str | None = None
    change: ChampionHistoryRow | None = None
    for version, reason in chain:
        change = ChampionHistoryRow(name=name, from_version=previous, to_version=str(version), action="adopt",
                                    reason=reason, actor=who, run_id=None, created_at=now)
        s.add(change)
        s.flush()  # ids in chain order: history() reads them back oldest first
        previous = str(version)
    assert change is not None and previous is not None
    s.add(ChampionRow(name=name, version=previous, changed_at=now, change_id=change.id))
    s.flush()
    return ChampionEvent.model_validate(change)


def history(s: Session, name: str) -> list[ChampionEvent]:
    rows = s.scalars(select(ChampionHistoryRow).where(ChampionHistoryRow.name == name)
                     .order_by(ChampionHistoryRow.id)).all()
    return [ChampionEvent.model_validate(r) for r in rows]
