"""Bring a metadata database to the newest schema: the Alembic revisions in `migrations/`,
run programmatically, one process at a time.

Every `MetadataStore` calls `upgrade` when it opens a database, so a fresh home, a home of
an older release and a home already at head all work without a separate step. Several job
drivers or CLI calls may do it at the same moment: the check and the upgrade run in one
transaction that first takes a cross-process lock (SQLite: the engine's `BEGIN IMMEDIATE`
takes the database's write lock; PostgreSQL: a transaction-scoped advisory lock), so one
process migrates and the others find the database at head.

A database created before Alembic (the release at 34f9275: tables made by `create_all` and
a `schema_version` table, no `alembic_version`) has exactly the tables of revision 0001; it
is stamped at 0001, its `schema_version` table dropped, and upgraded from there.

`python -m mlplatform.metadata.migrate revision "message"` writes a new revision by
autogenerating against a scratch database at head (see migrations/README).
"""

from __future__ import annotations

import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import Engine

from mlplatform.errors import PlatformError

MIGRATIONS = Path(__file__).with_name("migrations")
LEGACY_REVISION = "0001"  # what a pre-Alembic database already has
_PG_LOCK_KEY = 7261530331


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    cfg.attributes["connection"] = connection
    return cfg


@cache
def head() -> str:
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None, f"no Alembic revisions under {MIGRATIONS}"
    return found


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Migrate to head under the lock; return the revision it started from when it
    migrated ("" for an empty database), None when the database was already at head.

    On SQLite the engine must begin its transactions with BEGIN IMMEDIATE (the store's
    engine does), so that reading the revision already holds the write lock.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        current = current_revision(conn)
        if current == head():
            return None
        if current is None:
            tables = set(inspect(conn).get_table_names())
            if "context" in tables:
                _stamp_legacy(conn, tables)
        try:
            command.upgrade(alembic_config(conn), "head")
        except CommandError as exc:
            raise PlatformError(
                f"metadata database {engine.url.render_as_string(hide_password=True)} is at schema "
                f"revision {current!r}, which this release does not know (its newest is {head()!r}): "
                f"it was written by a newer mlplatform; upgrade mlplatform ({exc})") from None
        return current or ""


def _stamp_legacy(conn: Connection, tables: set[str]) -> None:
    if "schema_version" in tables:
        version = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
        if version not in (None, 1):
            raise PlatformError(f"metadata database has schema_version {version}, which no release "
                                "before Alembic wrote; refusing to guess its schema")
    command.stamp(alembic_config(conn), LEGACY_REVISION)
    if "schema_version" in tables:
        conn.execute(text("DROP TABLE schema_version"))


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def new_revision(message: str) -> Path:
    """Autogenerate a revision from the difference between schema.py and head."""
    rev_id = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="mlp-revision-") as tmp:
        engine = create_engine(f"sqlite:///{tmp}/scratch.db", connect_args={"isolation_level": None})
        event.listen(engine, "begin", _sqlite_begin)
        upgrade(engine)
        with engine.begin() as conn:
            script = command.revision(alembic_config(conn), message, autogenerate=True, rev_id=rev_id)
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        raise SystemExit('usage: python -m mlplatform.metadata.migrate revision "what changes"')
    print(new_revision(sys.argv[2]))
