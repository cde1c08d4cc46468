"""A new SQLite tracking database as a copy of one MLflow already migrated.

Why: MLflow creates a SQLite tracking database by running every one of its Alembic migrations
on it: 0.7-0.9 CPU seconds on 2 cores (MLflow 3.17), paid by the first run of every new home,
and by each of the ~50 homes the test suite makes. The migrated schema depends only on MLflow's
version. So the first database an install creates is kept, less its one seeded row (the Default
experiment, whose artifact location is that database's own), in the user's cache folder, and the
next new database starts as a copy of it. On open, MLflow still checks the copy's revision
against its own (`_verify_schema`) and creates the Default experiment it finds missing, with the
new database's location, as it does for any database. A template whose revision is not the one
MLflow checks against is dropped, not copied. Neither MLflow nor Alembic offers a template
database, hence this module.

Only SQLite, only a database no process has created yet, and only under the registry's first-
open lock (registry._first_open_lock). A cache that cannot be read or written means MLflow
creates the database itself, as before.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sqlite3
from pathlib import Path

from mlplatform.settings import user_cache_dir

# The row MLflow seeds into a new database that belongs to that database (its artifact location);
# MLflow recreates it on open when it is missing. Its tags go with it.
_SEEDED = ("DELETE FROM experiment_tags WHERE experiment_id = 0",
           "DELETE FROM experiments WHERE experiment_id = 0")


def template_path() -> Path:
    """In the user's cache folder (XDG), keyed by MLflow's version: the schema is MLflow's."""
    return user_cache_dir() / "mlflow-schema" / f"mlflow-{importlib.metadata.version('mlflow')}.db"


def revision(db: Path) -> str | None:
    """The Alembic revision MLflow recorded in the SQLite database `db`; None for a missing or
    empty file, or one MLflow has not finished creating."""
    if not db.exists() or db.stat().st_size == 0:
        return None
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _mlflow_head() -> str | None:
    """The revision MLflow checks a database against on open (its own `_verify_schema`)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return str(_get_latest_schema_revision())
    except Exception:  # noqa: BLE001 - an MLflow without it: no copies, MLflow migrates as usual
        return None


def seed(db: Path) -> bool:
    """Start `db`, which must not exist yet (or be empty), as a copy of the template; False when
    there is no template of MLflow's current revision (MLflow then creates the database itself,
    and `keep` makes the template from it)."""
    template = template_path()
    if not template.is_file() or (db.exists() and db.stat().st_size > 0):
        return False
    head = _mlflow_head()
    if head is None or revision(template) != head:  # damaged, or from another build of this version
        forget()
        return False
    partial = db.with_name(f"{db.name}.seed-{os.getpid()}")
    try:
        shutil.copyfile(template, partial)
        os.replace(partial, db)
    except OSError:
        partial.unlink(missing_ok=True)
        return False
    return True


def keep(db: Path) -> None:
    """After MLflow created `db` itself: keep a copy, less its seeded row, as the template."""
    template = template_path()
    if template.exists():
        return
    partial = template.with_name(f"{template.name}.{os.getpid()}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        src, dst = sqlite3.connect(db), sqlite3.connect(partial)
        try:
            src.backup(dst)  # a consistent copy even if another process reads `db` meanwhile
            for statement in _SEEDED:
                dst.execute(statement)
            dst.commit()
        finally:
            src.close()
            dst.close()
        os.replace(partial, template)
    except (OSError, sqlite3.Error):
        partial.unlink(missing_ok=True)


def forget() -> None:
    """Drop the template: the next database is made by MLflow, and kept."""
    try:
        template_path().unlink(missing_ok=True)
    except OSError:
        pass
