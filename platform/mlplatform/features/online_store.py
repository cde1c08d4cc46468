"""The online store: the latest feature row per (view, entity), for serving.

Two backends behind one small interface, chosen by URL (Feast's pluggable stores):
SQLite (`sqlite:///path`, the embedded default) and Redis (`redis://host:port/db`).
A row only replaces the stored one when it is at least as new by (event_ts,
created_ts), so materialising out of order or twice never moves a value back in
time. The TTL is not the store's business: the facade checks each row's event time
on read, so an expired value comes back as missing, with the reason.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlplatform.errors import InputError, PlatformError, StoreUnavailable
from mlplatform.features.definitions import FeatureView
from mlplatform.redact import redact_text, redact_url
from mlplatform.settings import CONNECT_TIMEOUT_S, setting_name

StoredRow = tuple[int, int, dict[str, Any]]  # event µs, created µs, values
REPLY_TIMEOUT_S = 10


def jsonable(value: Any) -> Any:
    """Feature values as JSON scalars; NaN / NaT are missing (null)."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value).isoformat()
    return value


def entity_key(value: Any) -> str:
    """The text key of an entity id, the same on write and read: a whole float (an int
    column that pandas widened because of a null) is written as the int it was."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _column_values(values: pd.Series) -> list[Any]:
    """One column as JSON-ready Python values, converted once per column, not per cell."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in values]
    return values.astype(object).where(values.notna(), None).tolist()


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return jsonable(value)
    return jsonable(value) if isinstance(value, pd.Timestamp | np.datetime64) else str(value)


def rows_to_payloads(view: FeatureView, latest: pd.DataFrame) -> list[tuple[str, int, int, str]]:
    """(entity key, event µs, created µs, JSON values) for each row."""
    event = latest[view.timestamp_column].to_numpy(dtype="datetime64[us]").astype("int64")
    if view.created_timestamp_column:
        created = latest[view.created_timestamp_column].to_numpy(dtype="datetime64[us]").astype("int64")
        created = np.where(created == np.iinfo(np.int64).min, event, created)
    else:
        created = event
    names = list(view.features)
    columns = [_column_values(latest[f]) for f in names]
    dumps = json.JSONEncoder(allow_nan=False, default=_default, separators=(",", ":")).encode
    keys = [entity_key(k) for k in latest[view.entity].tolist()]
    return [(key, int(e), int(c), dumps(dict(zip(names, vals, strict=True))))
            for key, e, c, vals in zip(keys, event.tolist(), created.tolist(), zip(*columns, strict=True),
                                       strict=True)]


class OnlineStore(Protocol):
    url: str  # for messages and logs: any password masked

    def write(self, view: FeatureView, rows: list[tuple[str, int, int, str]]) -> int: ...

    def read(self, view: FeatureView, entities: list[str]) -> list[StoredRow | None]: ...

    def materialized_writes(self, view: FeatureView) -> set[str]: ...

    def mark_materialized(self, view: FeatureView, write_ids: list[str]) -> None: ...

    def close(self) -> None: ...


class SQLiteOnlineStore:
    """One table keyed by (pipeline, view, entity). Not WITHOUT ROWID: rows hold a JSON
    vector of hundreds of bytes, and SQLite keeps such rows better in a rowid table (a
    lookup is an index search plus a rowid search, microseconds either way). A
    connection per thread (sqlite3 connections are not shareable)."""

    def __init__(self, path: str):
        self.url = f"sqlite:///{path}"
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("""CREATE TABLE IF NOT EXISTS online_features (
                pipeline TEXT NOT NULL, view TEXT NOT NULL, entity TEXT NOT NULL,
                event_us INTEGER NOT NULL, created_us INTEGER NOT NULL, payload TEXT NOT NULL,
                PRIMARY KEY (pipeline, view, entity))""")
            c.execute("""CREATE TABLE IF NOT EXISTS online_writes (
                pipeline TEXT NOT NULL, view TEXT NOT NULL, write_id TEXT NOT NULL,
                PRIMARY KEY (pipeline, view, write_id)) WITHOUT ROWID""")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def write(self, view: FeatureView, rows: list[tuple[str, int, int, str]]) -> int:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                """INSERT INTO online_features VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT (pipeline, view, entity) DO UPDATE SET
                     event_us = excluded.event_us, created_us = excluded.created_us,
                     payload = excluded.payload
                   WHERE (excluded.event_us, excluded.created_us)
                         >= (online_features.event_us, online_features.created_us)""",
                [(view.pipeline, view.name, *row) for row in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def read(self, view: FeatureView, entities: list[str]) -> list[StoredRow | None]:
        conn = self._conn()
        if len(entities) == 1:
            row = conn.execute(
                "SELECT entity, event_us, created_us, payload FROM online_features "
                "WHERE pipeline = ? AND view = ? AND entity = ?",
                (view.pipeline, view.name, entities[0])).fetchone()
            found = {row[0]: row} if row else {}
        else:
            found = {}
            for i in range(0, len(entities), 500):  # SQLite's bound-parameter limit
                chunk = entities[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                        "SELECT entity, event_us, created_us, payload FROM online_features "
                        f"WHERE pipeline = ? AND view = ? AND entity IN ({marks})",
                        (view.pipeline, view.name, *chunk)):
                    found[row[0]] = row
        return [(r[1], r[2], json.loads(r[3])) if (r := found.get(e)) else None for e in entities]

    def materialized_writes(self, view: FeatureView) -> set[str]:
        rows = self._conn().execute("SELECT write_id FROM online_writes WHERE pipeline = ? AND view = ?",
                                    (view.pipeline, view.name))
        return {r[0] for r in rows}

    def mark_materialized(self, view: FeatureView, write_ids: list[str]) -> None:
        self._conn().executemany("INSERT OR IGNORE INTO online_writes VALUES (?, ?, ?)",
                                 [(view.pipeline, view.name, w) for w in write_ids])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# Replace the stored hash only when the new row is at least as new; Lua runs atomically.
_UPSERT = """
local n = 0
for i, key in ipairs(KEYS) do
  local ev = tonumber(ARGV[3 * i - 2])
  local cr = tonumber(ARGV[3 * i - 1])
  local cur = redis.call('HMGET', key, 'e', 'c')
  local ce = tonumber(cur[1])
  if (not ce) or ev > ce or (ev == ce and cr >= tonumber(cur[2])) then
    redis.call('HSET', key, 'e', ARGV[3 * i - 2], 'c', ARGV[3 * i - 1], 'v', ARGV[3 * i])
    n = n + 1
  end
end
return n
"""


class RedisOnlineStore:
    """A hash per (pipeline, view, entity): fields e (event µs), c (created µs), v (JSON)."""

    def __init__(self, url: str):
        import redis

        self.url = redact_url(url)  # for messages and logs; the password stays in the client
        # Timeouts on connect and on every reply: a Redis that is down or stalled is an error
        # within seconds (a 503 in serving), never a hung step or replica.
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                           socket_timeout=REPLY_TIMEOUT_S)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            # The environment, not the input: exit 1 (a URL that is not a Redis URL is exit 2).
            raise PlatformError(f"{setting_name('online_store_url')} {self.url}: cannot reach Redis "
                                f"({redact_text(str(exc))})") from None
        self._upsert = self._redis.register_script(_UPSERT)

    @staticmethod
    def _key(view: FeatureView, entity: str) -> str:
        return f"mlp:{view.pipeline}:{view.name}:{entity}"

    def write(self, view: FeatureView, rows: list[tuple[str, int, int, str]]) -> int:
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            args: list[Any] = []
            for _, event, created, payload in chunk:
                args += [event, created, payload]
            self._upsert(keys=[self._key(view, r[0]) for r in chunk], args=args)
        return len(rows)

    def read(self, view: FeatureView, entities: list[str]) -> list[StoredRow | None]:
        import redis

        try:
            if len(entities) == 1:
                results = [self._redis.hmget(self._key(view, entities[0]), "e", "c", "v")]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for e in entities:
                    pipe.hmget(self._key(view, e), "e", "c", "v")
                results = pipe.execute()
        except redis.RedisError as exc:  # down or restarting: the client reconnects on the next call
            raise StoreUnavailable(f"{setting_name('online_store_url')} {self.url}: Redis is not answering "
                                   f"({redact_text(str(exc))})") from None
        return [(int(r[0]), int(r[1]), json.loads(r[2])) if r[0] is not None else None for r in results]

    def _writes_key(self, view: FeatureView) -> str:
        return f"mlp:{view.pipeline}:{view.name}:_materialized_writes"

    def materialized_writes(self, view: FeatureView) -> set[str]:
        return {w.decode() for w in self._redis.smembers(self._writes_key(view))}

    def mark_materialized(self, view: FeatureView, write_ids: list[str]) -> None:
        if write_ids:
            self._redis.sadd(self._writes_key(view), *write_ids)

    def close(self) -> None:
        self._redis.close()


def open_online_store(url: str) -> OnlineStore:
    """`sqlite:///path` or `redis://...` / `rediss://...` / `unix://...`."""
    if url.startswith("sqlite:///"):
        return SQLiteOnlineStore(url[len("sqlite:///"):])  # sqlite:////abs or sqlite:///relative
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url)
    raise InputError(f"online store URL {redact_url(url)!r}: expected sqlite:///PATH or "
                     "redis://HOST:PORT/DB")
