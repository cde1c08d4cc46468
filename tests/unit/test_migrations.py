"""The metadata store's schema comes from Alembic revisions (mlplatform/metadata/migrations),
run when a store opens a database: a fresh one, one the release before Alembic made
(tests/fixtures/metadata_34f9275.sql: its schema and a few rows, dumped from a database
that release's code wrote), one at an older revision. Real SQLite files."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mlplatform.artifacts import ModelVersion
from mlplatform.errors import PlatformError
from mlplatform.metadata import migrate
from mlplatform.metadata.schema import Base
from mlplatform.metadata.store import MetadataStore

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "metadata_34f9275.sql"


def _tables(store: MetadataStore) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def _diff(store: MetadataStore) -> list:
    """What autogenerate would write to bring the database to the models: nothing, if the
    revisions build exactly the schema the code reads and writes."""
    with store.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)


def _revision(store: MetadataStore) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())


def _legacy_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY.read_text())
    conn.close()


def test_a_fresh_database_is_built_by_the_revisions_to_match_the_models(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    assert _revision(store) == [migrate.head()] == ["0004"]
    assert {"context", "execution", "artifact", "event", "alert", "champion",
            "champion_history"} <= _tables(store)
    assert "schema_version" not in _tables(store)
    assert _diff(store) == []
    # Opening it again migrates nothing.
    assert migrate.upgrade(store.engine) is None


def test_a_home_of_the_release_before_alembic_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "metadata.db"
    _legacy_db(db)
    before = sqlite3.connect(db)
    assert [r[0] for r in before.execute("SELECT version FROM schema_version")] == [1]
    tables = {r[0] for r in before.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "alembic_version" not in tables and "context" in tables
    before.close()

    store = MetadataStore(f"sqlite:///{db}")

    assert _revision(store) == [migrate.head()]
    assert {"champion", "champion_history"} <= _tables(store)
    assert "schema_version" not in _tables(store)  # alembic_version replaces it
    assert _diff(store) == []
    # Every row survived, and reads back through the store's API.
    runs = {r.run_id: r for r in store.runs("demo")}
    assert set(runs) == {"demo-r1", "demo-r2"}
    assert runs["demo-r1"].status == "SUCCEEDED" and runs["demo-r1"].properties["spec_hash"] == "abc"
    assert runs["demo-r2"].message == "boom"
    detail = store.run("demo-r1")
    assert detail is not None
    assert [(s.step, s.status) for s in detail.steps] == [("ingest", "COMPLETE"), ("register", "COMPLETE")]
    assert store.consumed_hashes("demo", "ingest", "source_file") == {"h0"}
    version = store.find(ModelVersion, "models:/demo/1")
    assert version is not None and version.passed and version.content_hash == "sha1"
    assert [n.artifact.uri for n in store.lineage(version.id or 0)] == ["/snap/h1", "/data/day1.parquet"]
    [alert] = store.alerts("demo")
    assert alert.kind == "schema_break" and alert.step == "validate"
    # ... and the upgraded database takes new rows (ids continue) and champion changes.
    store.start_run("demo", "demo-r3", {})
    art = store.put_artifact("/snap/h2", "dataset_snapshot", "h2")
    assert art.id == 4
    store.set_champion("demo", "1", expected=None, action="manual", reason="test")
    assert store.champion("demo").version == "1"  # type: ignore[union-attr]
    # Opening it again (this release, or another process) changes nothing more.
    assert migrate.upgrade(store.engine) is None


def _open(url: str, barrier) -> None:  # noqa: ANN001
    barrier.wait()
    store = MetadataStore(url)
    assert store.runs("demo")


def test_processes_opening_an_old_home_at_once_upgrade_it_once(tmp_path: Path) -> None:
    db = tmp_path / "metadata.db"
    _legacy_db(db)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open, args=(f"sqlite:///{db}", barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    store = MetadataStore(f"sqlite:///{db}")
    assert _revision(store) == [migrate.head()] and _diff(store) == []
    assert len(store.runs("demo")) == 2


def test_a_database_at_the_first_revision_gets_the_champion_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
        conn.execute(sa.text("INSERT INTO alert (created_at, pipeline, severity, kind, message, details) "
                             "VALUES ('2026-01-01 00:00:00', 'p', 'info', 'k', 'kept', '{}')"))
    engine.dispose()
    store = MetadataStore(url)
    assert _revision(store) == [migrate.head()]
    assert {"champion", "champion_history"} <= _tables(store) and _diff(store) == []
    assert [a.message for a in store.alerts("p")] == ["kept"]


def test_a_database_from_a_newer_release_is_refused_clearly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = MetadataStore(url)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(PlatformError, match="revision '0099', which this release does not know"):
        MetadataStore(url)


def test_the_schema_check_sees_a_missing_table(tmp_path: Path) -> None:
    """The autogenerate comparison the tests above rely on does report a difference."""
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE champion"))
    assert [d[0] for d in _diff(store)] == ["add_table"]
