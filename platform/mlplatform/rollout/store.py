"""Rollouts in the metadata store: created once per pipeline at a time, changed only by
compare-and-set, so the controller's actor, a person's `platformctl rollout pause` and a
restarted actor can never overwrite each other's decisions.

The state is one JSON document per rollout (mlplatform.rollout.state.RolloutState);
`revision` is bumped by every write and compared by it. A writer that lost the race gets
RolloutConflict and re-reads: the store is the truth, the actor only a worker on it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.schema import RolloutRow, utcnow
from mlplatform.metadata.store import MetadataStore
from mlplatform.rollout.state import ACTIVE, RolloutState


class RolloutConflict(PlatformError):
    """The rollout changed since the caller read it (another writer came first)."""


class RolloutInProgress(InputError):
    """A pipeline already has an active rollout: a second one is refused, naming the first."""


def _describe(state: RolloutState) -> str:
    return (f"rollout {state.id} of {state.model_name} v{state.challenger} against v{state.champion} "
            f"is {state.status} ({state.phase}, {state.weight}% of the traffic)")


class RolloutStore:
    def __init__(self, metadata: MetadataStore):
        self.metadata = metadata

    def create(self, state: RolloutState) -> RolloutState:
        """Store a new rollout; refused while the pipeline has another active one."""
        current = self.active(state.pipeline)
        if current is not None and current.id != state.id:
            raise RolloutInProgress(f"pipeline {state.pipeline!r}: {_describe(current)}; wait for it, or "
                                    f"`platformctl rollout abort {state.pipeline}`")
        if current is not None:  # the same rollout again (a retried step): nothing new
            return current
        stored = state.model_copy(update={"revision": 1})
        try:
            with self.metadata.session() as s:
                s.add(RolloutRow(id=state.id, pipeline=state.pipeline,
                                 active_pipeline=state.pipeline if state.active else None,
                                 status=state.status, revision=1, state=stored.model_dump(mode="json"),
                                 created_at=state.started_at, updated_at=utcnow()))
        except IntegrityError:
            same = self.get(state.id)
            if same is not None:  # this very rollout, created meanwhile or finished since
                return same
            other = self.active(state.pipeline)
            first = _describe(other) if other else "another rollout started first"
            raise RolloutInProgress(f"pipeline {state.pipeline!r}: {first}") from None
        return stored

    def save(self, state: RolloutState) -> RolloutState:
        """Write `state` if the stored revision is still `state.revision`; the stored copy (revision
        + 1) comes back. RolloutConflict when someone else wrote first."""
        new = state.model_copy(update={"revision": state.revision + 1, "updated_at": utcnow()})
        with self.metadata.session() as s:
            done = s.execute(
                update(RolloutRow)
                .where(RolloutRow.id == state.id, RolloutRow.revision == state.revision)
                .values(revision=new.revision, status=new.status, state=new.model_dump(mode="json"),
                        active_pipeline=new.pipeline if new.active else None, updated_at=new.updated_at))
            if done.rowcount != 1:
                row = s.get(RolloutRow, state.id)
                now = f"revision {row.revision} ({row.status})" if row else "gone"
                raise RolloutConflict(f"rollout {state.id} changed since revision {state.revision}: it is at "
                                      f"{now}; read it again")
        return new

    def get(self, rollout_id: str) -> RolloutState | None:
        with self.metadata.session() as s:
            row = s.get(RolloutRow, rollout_id)
            return None if row is None else _state(row)

    def active(self, pipeline: str) -> RolloutState | None:
        with self.metadata.session() as s:
            row = s.scalar(select(RolloutRow).where(RolloutRow.active_pipeline == pipeline))
            return None if row is None else _state(row)

    def unsettled(self, pipeline: str) -> RolloutState | None:
        """The active rollout, else the newest finished one whose decision is not applied yet."""
        state = self.latest(pipeline)
        return state if state is not None and (state.active or not state.settled) else None

    def latest(self, pipeline: str) -> RolloutState | None:
        """The active rollout, else the newest finished one."""
        found = self.list(pipeline, limit=1)
        return self.active(pipeline) or (found[0] if found else None)

    def list(self, pipeline: str | None = None, *, limit: int = 50,
             active_only: bool = False) -> list[RolloutState]:
        query = select(RolloutRow).order_by(RolloutRow.created_at.desc(), RolloutRow.id.desc())
        if pipeline is not None:
            query = query.where(RolloutRow.pipeline == pipeline)
        if active_only:
            query = query.where(RolloutRow.status.in_(ACTIVE))
        with self.metadata.session() as s:
            return [_state(r) for r in s.scalars(query.limit(limit)).all()]


def _state(row: RolloutRow) -> RolloutState:
    return RolloutState.model_validate({**row.state, "revision": row.revision})
