"""A new home's SQLite tracking database starts as a copy of one MLflow migrated before
(mlplatform.models.mlflow_schema), and ends up as the database MLflow itself would have made:
the same tables, indexes, revision and rows, the Default experiment included, with the new
database's own artifact location. A copy MLflow refuses is dropped and the database made afresh."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplatform.models import mlflow_schema
from mlplatform.models.registry import ModelRegistry
from mlplatform.settings import load_settings

CREATING = "Creating initial MLflow database tables"  # MLflow's log line when it migrates a new database
TIMES = {"creation_time", "last_update_time"}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def mlflow_log() -> Iterator[_Lines]:
    """MLflow's own database log (its `mlflow` logger does not propagate to pytest's handler)."""
    logger = logging.getLogger("mlflow.store.db.utils")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _open(home: Path, cwd: Path, log: _Lines, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bool]:
    """The registry of a new home, opened from `cwd` (MLflow puts the Default experiment's
    artifacts under the working directory); returns its database and whether MLflow migrated it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PLATFORM_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(cwd)
    settings = load_settings(env={**os.environ, "PLATFORM_HOME": str(home)})
    before = len(log.lines)
    ModelRegistry(settings)
    db = Path(settings.mlflow_tracking_uri.removeprefix("sqlite:///"))
    return db, any(CREATING in line for line in log.lines[before:])


def _dump(db: Path) -> dict[str, object]:
    conn = sqlite3.connect(db)
    try:
        # Each statement as the set of its clauses: MLflow's own migrations list a table's CHECK
        # constraints in a different order from one new database to the next.
        schema = sorted(sorted(sql.split(", \n")) for (sql,) in
                        conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
        rows = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            rows[table] = sorted(tuple(v for n, v in zip(names, row, strict=True) if n not in TIMES)
                                 for row in cursor)
        return {"schema": schema, "rows": rows}
    finally:
        conn.close()


def test_a_new_database_is_a_copy_and_equals_the_one_mlflow_makes(
        tmp_path: Path, mlflow_log: _Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first, migrated = _open(tmp_path / "a", tmp_path, mlflow_log, monkeypatch)
    assert migrated and mlflow_schema.template_path().is_file()
    copied, migrated = _open(tmp_path / "b", tmp_path / "elsewhere", mlflow_log, monkeypatch)
    assert not migrated  # MLflow ran none of its migrations: the database is the copy
    # What MLflow makes itself from the same folder, with no template in its cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-cache"))
    made, migrated = _open(tmp_path / "c", tmp_path / "elsewhere", mlflow_log, monkeypatch)
    assert migrated
    assert _dump(copied) == _dump(made)
    default = _dump(copied)["rows"]["experiments"]  # type: ignore[index]
    assert [row[:2] for row in default] == [(0, "Default")]
    assert str(tmp_path / "elsewhere") in default[0][2] and default != _dump(first)["rows"]["experiments"]  # type: ignore[index]
    # The copy is a working store: a run and a registered version.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    registry = ModelRegistry(load_settings(env={**os.environ, "PLATFORM_HOME": str(tmp_path / "b")}))
    run_id = registry.start_run("p", "train", {"k": "v"})
    registry.log(run_id, params={"a": "1"}, metrics={"m": 0.5})
    assert registry.client.get_run(run_id).data.metrics == {"m": 0.5}
    assert registry.client.get_experiment_by_name("p").experiment_id == "1"  # numbered as in a fresh one


def test_a_template_of_another_revision_is_not_copied_but_replaced(
        tmp_path: Path, mlflow_log: _Lines, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    good, _ = _open(tmp_path / "a", tmp_path, mlflow_log, monkeypatch)
    template = mlflow_schema.template_path()
    conn = sqlite3.connect(template)
    conn.execute("UPDATE alembic_version SET version_num = 'not-a-revision'")  # a damaged or foreign one
    conn.commit()
    conn.close()
    db, migrated = _open(tmp_path / "b", tmp_path, mlflow_log, monkeypatch)
    assert migrated and _dump(db) == _dump(good)
    assert _dump(template)["rows"]["alembic_version"] == _dump(good)["rows"]["alembic_version"]  # type: ignore[index]
    _, migrated = _open(tmp_path / "c", tmp_path, mlflow_log, monkeypatch)
    assert not migrated  # the replacement is copied again
