"""The platform's metadata store: what MLflow lacks (MLMD-style lineage).

Contexts (a pipeline, a pipeline run), executions (one step of a run), artifacts
(data snapshots, source files, models...) and events (execution <-> artifact,
input or output). SQLite with WAL on one machine, PostgreSQL on a cluster: the
same SQLAlchemy code.

The schema is Alembic's (metadata/migrations); opening a store brings the database to
head, serialised across processes: several job drivers or CLI calls may open a fresh
database at the same moment. Who is champion is a row here too, changed by
compare-and-set (metadata/champion.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mlplatform.artifacts import A
from mlplatform.errors import InputError, PlatformError, StoreUnavailable
from mlplatform.metadata import champion as _champion
from mlplatform.metadata import migrate
from mlplatform.metadata.champion import Action, Champion, ChampionConflict, ChampionEvent
from mlplatform.metadata.schema import (
    AlertRow,
    ArtifactRow,
    ChampionRow,
    ContextRow,
    EventRow,
    ExecutionRow,
    utcnow,
)
from mlplatform.redact import redact_text, redact_url
from mlplatform.settings import db_connect_args, setting_name, with_db_driver

ExecStatus = Literal["RUNNING", "COMPLETE", "FAILED", "SKIPPED"]
RunStatus = Literal["RUNNING", "SUCCEEDED", "FAILED"]


# --- what callers get back ------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Artifact(_Out):
    id: int
    uri: str
    kind: str
    content_hash: str | None
    properties: dict[str, Any]
    created_at: dt.datetime


class Execution(_Out):
    id: int
    step: str
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    duration_s: float | None
    host: str
    parameters: dict[str, Any]
    summary: dict[str, Any]
    error: str | None


class ArtifactEvent(BaseModel):
    type: Literal["INPUT", "OUTPUT"]
    step: str
    artifact: Artifact


class Run(BaseModel):
    run_id: str
    pipeline: str
    status: str
    created_at: dt.datetime
    message: str = ""
    job_id: str | None = None
    spec_file: str | None = None
    attempts: int = 0
    properties: dict[str, Any]


class RunDetail(Run):
    steps: list[Execution]
    artifacts: list[ArtifactEvent]


class Alert(_Out):
    id: int
    created_at: dt.datetime
    pipeline: str
    run_id: str | None
    step: str | None
    severity: str
    kind: str
    message: str
    details: dict[str, Any]
    source: str = "pipeline"
    link: str | None = None
    acked_at: dt.datetime | None = None
    acked_by: str | None = None
    notified: str | None = None


class LineageNode(BaseModel):
    artifact: Artifact
    via: str  # "run/step": the execution that links it to the previous node
    depth: int


# --- the store -------------------------------------------------------------------


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    # Switching a fresh database to WAL needs it to itself; SQLite answers "database is
    # locked" at once (no busy wait) when another process is in it, e.g. migrating it.
    # WAL is a property of the file: once one connection set it, the others find it set.
    deadline = time.monotonic() + 60
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")  # stays as is for :memory:
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # pysqlite would otherwise defer BEGIN and make reads-then-writes racy; an
    # IMMEDIATE transaction takes the write lock up front (SQLAlchemy's recipe).
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _strict_json(value: Any) -> str:
    """JSON as PostgreSQL accepts it: NaN and infinities (a metric of an empty slice) are not
    JSON and PostgreSQL refuses them, so they are stored as null. SQLite keeps Python's NaN."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def db_error_reason(exc: BaseException) -> str:
    """The driver's own first line (`password authentication failed for user "mlp"`,
    `connection refused`...), masked, without SQLAlchemy's SQL and background link."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    text = "; ".join(ln for ln in lines[:3] if not ln.startswith("(Background"))[:300]
    return redact_text(text) or type(orig).__name__


class MetadataStore:
    """The facade over the metadata tables. One per process; cheap to create."""

    def __init__(self, url: str):
        try:
            make_url(url)
        except ArgumentError:
            raise InputError(f"metadata_url {redact_url(url)!r}: not a database URL "
                             "(sqlite:///path or postgresql://...)") from None
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 30, "isolation_level": None}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            # A connect timeout: an unreachable server is an error in seconds, not a hang.
            try:
                self.engine = create_engine(with_db_driver(url), pool_pre_ping=True,
                                            connect_args=db_connect_args(url), json_serializer=_strict_json)
            except ModuleNotFoundError as exc:  # the database's driver is an optional extra
                raise InputError(f"metadata_url {redact_url(url)!r}: its database driver is not "
                                 f"installed ({exc.name})",
                                 hint="pip install 'mlplatform[cluster]' for PostgreSQL") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._migrate()
        except DBAPIError as exc:
            if self.is_sqlite:
                raise
            raise PlatformError(f"{setting_name('metadata_url')} {redact_url(url)}: "
                                f"cannot connect: {db_error_reason(exc)}") from None

    def _migrate(self) -> None:
        """Bring the schema to head (Alembic), one process at a time: see metadata/migrate.py."""
        migrate.upgrade(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as s:
                yield s
        except (OperationalError, InterfaceError) as exc:
            if self.is_sqlite:
                raise
            # The server went away (a restart, a failover): the transaction rolled back, nothing
            # half-written; the caller fails cleanly and a retry (a resumed run) reconnects
            # (pool_pre_ping drops the dead connections).
            raise StoreUnavailable(f"{setting_name('metadata_url')} {redact_url(self.url)}: the database "
                                   f"is not answering: {db_error_reason(exc)}") from None

    # -- contexts -------------------------------------------------------------------

    def _context(self, s: Session, type_: str, name: str, parent_id: int | None = None,
                 create: bool = True) -> ContextRow | None:
        row = s.scalar(select(ContextRow).where(ContextRow.type == type_, ContextRow.name == name))
        if row is None and create:
            row = ContextRow(type=type_, name=name, parent_id=parent_id, properties={})
            s.add(row)
            s.flush()
        return row

    def start_run(self, pipeline: str, run_id: str, properties: dict[str, Any]) -> Run:
        """Create the run (or reopen it, to resume) and mark it RUNNING."""
        with self.session() as s:
            pipe = self._context(s, "pipeline", pipeline)
            assert pipe is not None
            run = self._context(s, "pipeline_run", run_id, parent_id=pipe.id)
            assert run is not None
            if run.parent_id != pipe.id:
                raise ValueError(f"run {run_id!r} belongs to another pipeline")
            props = dict(run.properties or {})
            attempts = int(props.get("attempts", 0)) + 1
            props.update(properties, status="RUNNING", attempts=attempts,
                         started_at=utcnow().isoformat(), ended_at=None, message="")
            run.properties = props
            return self._run_out(run, pipeline)

    def finish_run(self, run_id: str, status: RunStatus, message: str = "",
                   properties: dict[str, Any] | None = None) -> None:
        """Mark the run ended; `properties` are what only an ended run can say (the spec it
        applied, mlplatform.spec_plan)."""
        with self.session() as s:
            run = self._context(s, "pipeline_run", run_id, create=False)
            if run is None:
                raise KeyError(run_id)
            run.properties = {**run.properties, **(properties or {}), "status": status,
                              "message": message, "ended_at": utcnow().isoformat()}

    @staticmethod
    def _run_out(row: ContextRow, pipeline: str) -> Run:
        props = row.properties or {}
        return Run(run_id=row.name, pipeline=pipeline, status=props.get("status", "?"),
                   created_at=row.created_at, message=props.get("message") or "",
                   job_id=props.get("job_id"), spec_file=props.get("spec_file"),
                   attempts=int(props.get("attempts", 0)), properties=props)

    def _run_rows(self, s: Session, pipeline: str) -> Any:
        """A pipeline's run rows, newest first, read as they are iterated."""
        pipe = self._context(s, "pipeline", pipeline, create=False)
        if pipe is None:
            return iter(())
        return s.scalars(
            select(ContextRow)
            .where(ContextRow.parent_id == pipe.id, ContextRow.type == "pipeline_run")
            .order_by(ContextRow.created_at.desc(), ContextRow.id.desc())
            .execution_options(yield_per=50)
        )

    def runs(self, pipeline: str) -> list[Run]:
        """Runs of a pipeline, newest first."""
        with self.session() as s:
            return [self._run_out(r, pipeline) for r in self._run_rows(s, pipeline)]

    def newest_run_property(self, pipeline: str, key: str) -> tuple[str, Any] | None:
        """The newest run of the pipeline that recorded run property `key`: (run id, value).
        Stops at the first such run: older runs' properties (each holds its spec snapshot) are
        never read."""
        with self.session() as s:
            for row in self._run_rows(s, pipeline):
                if key in (row.properties or {}):
                    return row.name, row.properties[key]
        return None

    def pipelines(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(ContextRow.name).where(ContextRow.type == "pipeline")))

    def run(self, run_id: str) -> RunDetail | None:
        """A run with its steps (in order, with durations) and the artifacts they touched."""
        with self.session() as s:
            row = self._context(s, "pipeline_run", run_id, create=False)
            if row is None:
                return None
            pipe = s.get(ContextRow, row.parent_id)
            execs = s.scalars(
                select(ExecutionRow).where(ExecutionRow.context_id == row.id)
                .order_by(ExecutionRow.id)
            ).all()
            events = s.execute(
                select(EventRow.type, ExecutionRow.step, ArtifactRow)
                .join(ExecutionRow, EventRow.execution_id == ExecutionRow.id)
                .join(ArtifactRow, EventRow.artifact_id == ArtifactRow.id)
                .where(ExecutionRow.context_id == row.id)
                .order_by(EventRow.id)
            ).all()
            base = self._run_out(row, pipe.name if pipe else "?")
            return RunDetail(
                **base.model_dump(),
                steps=[Execution.model_validate(e) for e in execs],
                artifacts=[
                    ArtifactEvent(type=t, step=step, artifact=Artifact.model_validate(a))
                    for t, step, a in events
                ],
            )

    # -- executions -----------------------------------------------------------------

    def start_execution(self, run_id: str, step: str, parameters: dict[str, Any]) -> int:
        with self.session() as s:
            run = self._context(s, "pipeline_run", run_id, create=False)
            if run is None:
                raise KeyError(run_id)
            row = ExecutionRow(context_id=run.id, step=step, status="RUNNING",
                               parameters=parameters, summary={}, started_at=utcnow())
            s.add(row)
            s.flush()
            return row.id

    def finish_execution(self, execution_id: int, status: ExecStatus, *,
                         summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        with self.session() as s:
            row = s.get(ExecutionRow, execution_id)
            if row is None:
                raise KeyError(execution_id)
            row.status = status
            row.ended_at = utcnow()
            row.duration_s = (row.ended_at - row.started_at).total_seconds()
            row.summary = summary or {}
            row.error = error

    def completed_steps(self, run_id: str) -> dict[str, Execution]:
        """The last COMPLETE execution of each step of a run: what a resume skips."""
        with self.session() as s:
            run = self._context(s, "pipeline_run", run_id, create=False)
            if run is None:
                return {}
            rows = s.scalars(
                select(ExecutionRow)
                .where(ExecutionRow.context_id == run.id, ExecutionRow.status == "COMPLETE")
                .order_by(ExecutionRow.id)
            ).all()
            return {r.step: Execution.model_validate(r) for r in rows}

    # -- artifacts and events -------------------------------------------------------

    def put_artifact(self, uri: str, kind: str, content_hash: str | None,
                     properties: dict[str, Any] | None = None) -> Artifact:
        """Register an artifact; the same (kind, uri, hash) is one artifact, not a copy."""
        with self.session() as s:
            row = s.scalar(
                select(ArtifactRow).where(ArtifactRow.kind == kind, ArtifactRow.uri == uri,
                                          ArtifactRow.content_hash == content_hash)
            )
            if row is None:
                row = ArtifactRow(uri=uri, kind=kind, content_hash=content_hash,
                                  properties=properties or {})
                s.add(row)
                s.flush()
            return Artifact.model_validate(row)

    def link(self, execution_id: int, artifact_id: int, type_: Literal["INPUT", "OUTPUT"]) -> None:
        with self.session() as s:
            s.add(EventRow(execution_id=execution_id, artifact_id=artifact_id, type=type_))

    def artifact(self, artifact_id: int) -> Artifact | None:
        with self.session() as s:
            row = s.get(ArtifactRow, artifact_id)
            return Artifact.model_validate(row) if row else None

    def find_artifact(self, uri: str, kind: str) -> Artifact | None:
        """The newest artifact recorded under (uri, kind)."""
        with self.session() as s:
            row = s.scalar(select(ArtifactRow).where(ArtifactRow.uri == uri, ArtifactRow.kind == kind)
                           .order_by(ArtifactRow.id.desc()).limit(1))
            return Artifact.model_validate(row) if row else None

    def artifacts_of_run(self, run_id: str, step: str, type_: str = "OUTPUT") -> list[Artifact]:
        detail = self.run(run_id)
        if detail is None:
            return []
        return [e.artifact for e in detail.artifacts if e.step == step and e.type == type_]

    def consumed_hashes(self, pipeline: str, step: str, kind: str) -> set[str]:
        """Hashes of `kind` artifacts that completed executions of `step` took as input.

        This is how ingest knows which source files a pipeline has already seen.
        """
        pipe = ContextRow.__table__.alias("pipe")
        with self.session() as s:
            rows = s.scalars(
                select(ArtifactRow.content_hash)
                .join(EventRow, EventRow.artifact_id == ArtifactRow.id)
                .join(ExecutionRow, EventRow.execution_id == ExecutionRow.id)
                .join(ContextRow, ExecutionRow.context_id == ContextRow.id)
                .join(pipe, ContextRow.parent_id == pipe.c.id)
                .where(pipe.c.name == pipeline, pipe.c.type == "pipeline",
                       ExecutionRow.step == step, ExecutionRow.status == "COMPLETE",
                       EventRow.type == "INPUT", ArtifactRow.kind == kind)
            ).all()
            return {h for h in rows if h}

    def _outputs_query(self, kind: str, pipeline: str | None, step: str | None) -> Any:
        pipe = ContextRow.__table__.alias("pipe")
        query = (
            select(ArtifactRow, pipe.c.name, ContextRow.name)
            .join(EventRow, EventRow.artifact_id == ArtifactRow.id)
            .join(ExecutionRow, EventRow.execution_id == ExecutionRow.id)
            .join(ContextRow, ExecutionRow.context_id == ContextRow.id)
            .join(pipe, ContextRow.parent_id == pipe.c.id)
            .where(pipe.c.type == "pipeline", ExecutionRow.status == "COMPLETE",
                   EventRow.type == "OUTPUT", ArtifactRow.kind == kind)
            .order_by(ExecutionRow.id.desc(), EventRow.id.desc())
        )
        if pipeline is not None:
            query = query.where(pipe.c.name == pipeline)
        if step is not None:
            query = query.where(ExecutionRow.step == step)
        return query

    def outputs(self, kind: str, *, pipeline: str | None = None,
                step: str | None = None) -> list[tuple[str, str, Artifact]]:
        """Every `kind` artifact written by COMPLETE executions, newest first, as
        (pipeline, run id, artifact); one row per artifact (its newest writer)."""
        seen: set[int] = set()
        found = []
        with self.session() as s:
            for art, pipe_name, run_name in s.execute(self._outputs_query(kind, pipeline, step)).all():
                if art.id not in seen:
                    seen.add(art.id)
                    found.append((pipe_name, run_name, Artifact.model_validate(art)))
        return found

    # -- alerts -------------------------------------------------------------------------

    def add_alert(self, pipeline: str, severity: str, kind: str, message: str, *,
                  run_id: str | None = None, step: str | None = None,
                  details: dict[str, Any] | None = None, source: str = "pipeline",
                  link: str | None = None) -> Alert:
        with self.session() as s:
            row = AlertRow(pipeline=pipeline, severity=severity, kind=kind, message=message,
                           run_id=run_id, step=step, details=details or {}, created_at=utcnow(),
                           source=source, link=link)
            s.add(row)
            s.flush()
            return Alert.model_validate(row)

    def alerts(self, pipeline: str | None = None, limit: int = 100) -> list[Alert]:
        with self.session() as s:
            query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
            if pipeline:
                query = query.where(AlertRow.pipeline == pipeline)
            return [Alert.model_validate(r) for r in s.scalars(query)]

    def lineage(self, artifact_id: int, direction: Literal["upstream", "downstream"] = "upstream",
                max_depth: int = 20, stop_at: frozenset[str] = frozenset()) -> list[LineageNode]:
        """Artifacts an artifact was made from (upstream) or that were made from it.

        Walks artifact -> producing execution -> its inputs (or the reverse),
        breadth first, so each artifact appears once, at its shortest depth.
        """
        start_from, step_to = ("OUTPUT", "INPUT") if direction == "upstream" else ("INPUT", "OUTPUT")
        seen: set[int] = {artifact_id}
        frontier = [artifact_id]
        out: list[LineageNode] = []
        with self.session() as s:
            for depth in range(1, max_depth + 1):
                if not frontier:
                    break
                exec_ids = s.scalars(
                    select(EventRow.execution_id).where(
                        EventRow.artifact_id.in_(frontier), EventRow.type == start_from)
                ).all()
                if not exec_ids:
                    break
                rows = s.execute(
                    select(ArtifactRow, ExecutionRow.step, ContextRow.name)
                    .join(EventRow, EventRow.artifact_id == ArtifactRow.id)
                    .join(ExecutionRow, EventRow.execution_id == ExecutionRow.id)
                    .join(ContextRow, ExecutionRow.context_id == ContextRow.id)
                    .where(EventRow.execution_id.in_(exec_ids), EventRow.type == step_to)
                ).all()
                frontier = []
                for art, step, run_name in rows:
                    if art.id in seen:
                        continue
                    seen.add(art.id)
                    if art.kind not in stop_at:  # listed, but not walked through
                        frontier.append(art.id)
                    out.append(LineageNode(artifact=Artifact.model_validate(art),
                                           via=f"{run_name}/{step}", depth=depth))
        return out

    # -- typed artifacts (the contracts of mlplatform.artifacts) ---------------------------

    def put(self, art: A) -> A:
        """Record a typed artifact (or find the identical one) and return it with its id."""
        row = self.put_artifact(art.uri, art.kind, art.content_hash, art.properties())
        return art.model_copy(update={"id": row.id})

    @staticmethod
    def typed(model: type[A], art: Artifact, where: str = "") -> A:
        return model.from_record(id=art.id, uri=art.uri, kind=art.kind, content_hash=art.content_hash,
                                 properties=art.properties, where=where)

    def get(self, model: type[A], artifact_id: int) -> A | None:
        art = self.artifact(artifact_id)
        return None if art is None else self.typed(model, art, f"artifact {artifact_id}")

    def find(self, model: type[A], uri: str) -> A | None:
        """The newest `model` artifact recorded under `uri`."""
        art = self.find_artifact(uri, model.kind)
        return None if art is None else self.typed(model, art)

    def run_outputs(self, run_id: str, model: type[A]) -> list[A]:
        """`model` artifacts written by COMPLETE executions of one run, in the order written."""
        with self.session() as s:
            rows = s.execute(
                select(ArtifactRow, ExecutionRow.step)
                .join(EventRow, EventRow.artifact_id == ArtifactRow.id)
                .join(ExecutionRow, EventRow.execution_id == ExecutionRow.id)
                .join(ContextRow, ExecutionRow.context_id == ContextRow.id)
                .where(ContextRow.type == "pipeline_run", ContextRow.name == run_id,
                       ExecutionRow.status == "COMPLETE", EventRow.type == "OUTPUT",
                       ArtifactRow.kind == model.kind)
                .order_by(EventRow.id)
            ).all()
            return [self.typed(model, Artifact.model_validate(a), f"run {run_id}, step {step}:")
                    for a, step in rows]

    def latest(self, model: type[A], pipeline: str, *, step: str | None = None,
               exclude_run: str | None = None) -> A | None:
        """The newest `model` artifact a COMPLETE execution of the pipeline wrote."""
        query = self._outputs_query(model.kind, pipeline, step)
        if exclude_run:
            query = query.where(ContextRow.name != exclude_run)
        with self.session() as s:
            row = s.execute(query.limit(1)).first()
            if row is None:
                return None
            return self.typed(model, Artifact.model_validate(row[0]), f"run {row[2]}:")

    def outputs_of(self, model: type[A], *, pipeline: str | None = None,
                   step: str | None = None) -> list[tuple[str, str, A]]:
        """Every `model` artifact of COMPLETE executions, newest first: (pipeline, run id, artifact)."""
        return [(pipe, run, self.typed(model, art, f"run {run}:"))
                for pipe, run, art in self.outputs(model.kind, pipeline=pipeline, step=step)]

    # -- the champion record (compare-and-set; MLflow's alias mirrors it) -------------------

    def set_champion(self, name: str, version: str, *, expected: str | None, action: Action,
                     reason: str, run_id: str | None = None, actor: str | None = None) -> ChampionEvent:
        """Make `version` the champion of `name` if the champion is still `expected` (None: no
        champion yet), recording the change; raise ChampionConflict otherwise.

        Idempotent: when `version` already is champion and the caller expected it, or the
        change that made it so carries the same `run_id`, nothing is written and that change
        comes back with `written=False`.
        """
        try:
            with self.session() as s:
                return _champion.compare_and_set(s, name, str(version), expected=expected, action=action,
                                                 reason=reason, run_id=run_id, actor=actor)
        except IntegrityError:
            # PostgreSQL: two first champions inserted at once; the other one won.
            now = self.champion(name)
            raise ChampionConflict(name, expected, now.version if now else None, str(version)) from None

    def adopt_champion(self, name: str, chain: Sequence[tuple[str, str]], *,
                       actor: str | None = None) -> ChampionEvent:
        """Give `name`, which has no champion row, the champion and history a home from before
        the record kept in MLflow: `chain` is (version, reason) per change, oldest first, the
        last one the champion, recorded as `adopt` changes in one transaction. Raises
        ChampionConflict, writing nothing, when the model has a row already."""
        try:
            with self.session() as s:
                return _champion.adopt(s, name, chain, actor=actor)
        except IntegrityError:
            # PostgreSQL: another process inserted the first row at the same moment.
            now = self.champion(name)
            raise ChampionConflict(name, None, now.version if now else None, str(chain[-1][0])) from None

    def champion(self, name: str) -> Champion | None:
        """The champion record of `name`, or None when nothing was ever promoted."""
        with self.session() as s:
            return _champion.read(s, name)

    def champions(self) -> dict[str, Champion]:
        with self.session() as s:
            names = s.scalars(select(ChampionRow.name).order_by(ChampionRow.name)).all()
            found = {n: _champion.read(s, n) for n in names}
            return {n: c for n, c in found.items() if c is not None}

    def champion_history(self, name: str) -> list[ChampionEvent]:
        """Every change of the champion of `name`, oldest first."""
        with self.session() as s:
            return _champion.history(s, name)
