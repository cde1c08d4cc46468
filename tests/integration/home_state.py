"""What a home's stores hold, to tell whether a command wrote anything to them: every file by
its content hash, and each SQLite database by its SQL dump (a reader may checkpoint SQLite's
write-ahead log into the file, which rewrites bytes but not content)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

# SQLite's own side files (the WAL, its index, MLflow's lock) follow the database they serve.
_SIDE_FILES = ("-wal", "-shm", ".lock")


def home_state(home: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.name.endswith(_SIDE_FILES):
            continue
        rel = str(path.relative_to(home))
        if path.suffix == ".db":
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                content = "\n".join(con.iterdump()).encode()
            finally:
                con.close()
        else:
            content = path.read_bytes()
        out[rel] = hashlib.sha256(content).hexdigest()
    return out


def settled_state(home: Path, timeout: float = 30.0) -> dict[str, str]:
    """The state once two looks a second apart agree (a replica's prediction log from an
    earlier test may still be on its way to the store)."""
    deadline = time.monotonic() + timeout
    before = home_state(home)
    while True:
        time.sleep(1.0)
        now = home_state(home)
        if now == before or time.monotonic() > deadline:
            return now
        before = now


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
