"""The prediction log of a model server replica: every prediction (and every outcome fed
back) is appended in memory on the request path and written as Parquet parts by a
background thread.

`BatchedLog.append` only extends a list under a lock: no I/O, no DataFrame. A daemon
thread (not an asyncio task: the writes are blocking pyarrow I/O and would stall the
replica's event loop) writes what is pending as one DataFrame every `max_delay_s`, or
sooner once `max_rows` rows wait. A failed write keeps its rows pending and is retried a
round later, so nothing is lost while the process lives; `close()` (the replica's
shutdown) writes the rest. Each replica has its own log and writes its own parts.

Where the rows land (mlplatform.features.offline_store; read them with
mlplatform.serving.predictions):

    <storage>/features/<pipeline>/served/<service>/date=YYYY-MM-DD/part-<id>.parquet
    <storage>/features/<pipeline>/feedback/date=YYYY-MM-DD/part-<uuid>.parquet
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pandas as pd
import pyarrow as pa

from mlplatform.errors import InputError
from mlplatform.features.offline_store import OfflineStore, as_number, as_text
from mlplatform.serving.predictions import (
    FEEDBACK_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTION_FIELDS,
    VARIANTS,
    known_request_ids,
)

__all__ = ["FEEDBACK_COLUMNS", "PREDICTION_COLUMNS", "PREDICTION_FIELDS", "VARIANTS", "BatchedLog",
           "feedback_writer", "known_request_ids", "prediction_writer"]

log = logging.getLogger(__name__)


class BatchedLog:
    """Records appended on the hot path, written in batches by a daemon thread.

    `write` receives one DataFrame per batch, built from the records with object dtype
    (values exactly as appended: a label 1 next to a missing one stays 1, not 1.0).
    Appended dicts are kept, not copied: do not change them afterwards.
    """

    def __init__(self, write: Callable[[pd.DataFrame], Any], *, max_rows: int = 2000,
                 max_delay_s: float = 1.0):
        if max_rows < 1 or max_delay_s <= 0:
            raise ValueError(f"max_rows must be >= 1 and max_delay_s > 0, got {max_rows}, {max_delay_s}")
        self._batcher = _Batcher(write, max_rows, max_delay_s)
        # The thread holds the batcher, never this object, so that dropping the last reference
        # (or the interpreter exiting) still closes it: the rows pending then are written.
        self._finalizer = weakref.finalize(self, self._batcher.close)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Queue records for the next write: a list extend under a lock, nothing more. After
        close() they wait for the next flush() or close()."""
        self._batcher.append(records)

    def flush(self) -> int:
        """Write everything pending now, in this thread; the number of rows written. A failed
        write raises, its rows staying pending."""
        return self._batcher.flush()

    def close(self) -> None:
        """Stop the thread and write what is pending. Idempotent, never raises (safe from
        __del__): a failure is logged with the number of rows that could not be written.
        A later close() writes rows appended after the first."""
        self._batcher.close()

    @property
    def written(self) -> int:
        """Rows written so far."""
        return self._batcher.written

    @property
    def pending(self) -> int:
        """Rows not written yet (including those of a write in progress)."""
        return self._batcher.pending


class _Batcher:
    def __init__(self, write: Callable[[pd.DataFrame], Any], max_rows: int, max_delay_s: float):
        self.write, self.max_rows, self.max_delay_s = write, max_rows, max_delay_s
        self.lock = threading.Lock()  # guards rows, in_flight, written
        self.write_lock = threading.Lock()  # one write at a time: the thread's or a flush()
        self.rows: list[dict[str, Any]] = []
        self.in_flight = 0
        self.written = 0
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="predlog-writer", daemon=True)
        self.thread.start()

    @property
    def pending(self) -> int:
        with self.lock:
            return len(self.rows) + self.in_flight

    def append(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            self.rows.extend(records)
            full = len(self.rows) >= self.max_rows
        if full:
            self.wake.set()

    def run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait(self.max_delay_s)
            self.wake.clear()
            if self.stop.is_set():
                return  # close() writes the rest
            try:
                self.flush()
            except Exception as exc:
                log.warning("prediction log: a write of %d row(s) failed, retrying in %.1fs: %s: %s",
                            self.pending, self.max_delay_s, type(exc).__name__, exc)
                # Back off a whole round: rows arriving past max_rows must not turn the retries
                # into a tight loop against a failing store.
                self.stop.wait(self.max_delay_s)

    def flush(self) -> int:
        with self.write_lock:
            with self.lock:
                batch, self.rows = self.rows, []
                self.in_flight = len(batch)
            if not batch:
                return 0
            try:
                self.write(pd.DataFrame(batch, dtype=object))
            except BaseException:
                with self.lock:  # back in front of what arrived meanwhile: nothing lost, order kept
                    self.rows[:0] = batch
                    self.in_flight = 0
                raise
            with self.lock:
                self.in_flight = 0
                self.written += len(batch)
            return len(batch)

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        if self.thread is not threading.current_thread():
            self.thread.join()
        try:
            self.flush()
        except Exception as exc:
            log.error("prediction log: %d row(s) could not be written at close: %s: %s",
                      self.pending, type(exc).__name__, exc)


# -- the writers: records -> the offline store ---------------------------------------------


def prediction_writer(storage_uri: str, pipeline: str, service: str) -> Callable[[pd.DataFrame], Any]:
    """A BatchedLog write function appending prediction records (PREDICTION_FIELDS, an
    optional `score`, then one key per feature) to the served log of `service`:
    `output` is stored as text, `score` as a float (the record's own `score`, else the
    output when it is a number, else null), features as their type (text when one
    batch mixes text and numbers). Rows without a request_id or a valid event_ts cannot
    be stored: they are dropped with an error, not retried forever."""
    # OfflineStore.log_served's rule, checked here so that a bad name fails at start-up
    # rather than in every retried write.
    if not re.fullmatch(r"[a-z][a-z0-9_]*", service):
        raise InputError(f"service {service!r}: use lower-case letters, digits and '_'")
    store = OfflineStore(storage_uri, pipeline)

    def write(records: pd.DataFrame) -> Any:
        df = _storable(records, "prediction log")
        return store.log_served(service, _prediction_frame(df)) if len(df) else None

    return write


def feedback_writer(storage_uri: str, pipeline: str) -> Callable[[pd.DataFrame], Any]:
    """A BatchedLog write function appending feedback records {request_id, label,
    event_ts} through OfflineStore.log_feedback (label as text plus `label_value`)."""
    store = OfflineStore(storage_uri, pipeline)

    def write(records: pd.DataFrame) -> Any:
        df = _storable(records, "feedback log")
        if not len(df):
            return None
        return store.log_feedback(df if "label" in df.columns else df.assign(label=None))

    return write


def _storable(records: pd.DataFrame, what: str) -> pd.DataFrame:
    """The rows with a request_id and an event_ts (parsed, UTC); the others are dropped,
    logged: retrying them could never succeed."""
    n = len(records)
    if "request_id" not in records.columns or "event_ts" not in records.columns:
        log.error("%s: %d record(s) without request_id or event_ts dropped", what, n)
        return records.iloc[0:0]
    ts = pd.to_datetime(records["event_ts"], utc=True, errors="coerce", format="mixed")
    keep = records["request_id"].notna() & ts.notna()
    if not keep.all():
        log.error("%s: %d of %d record(s) without a request_id or a valid event_ts dropped",
                  what, int((~keep).sum()), n)
    return records.loc[keep].assign(event_ts=ts[keep], request_id=records["request_id"][keep].map(str))


def _prediction_frame(df: pd.DataFrame) -> pd.DataFrame:
    def column(name: str) -> pd.Series:
        return df[name] if name in df.columns else pd.Series(None, index=df.index, dtype=object)

    output = column("output").map(as_text).astype(object)
    score = column("score").map(as_number).astype(object)
    score = score.where(score.notna(), column("output").map(as_number)).astype("float64")
    text = {c: column(c).map(as_text).astype(object)
            for c in ("pipeline", "version", "variant", "entity", "error")}
    latency = pd.to_numeric(column("latency_ms"), errors="coerce").astype("float64")
    fixed = {"request_id": df["request_id"], "event_ts": df["event_ts"],
             **{c: text[c] for c in ("pipeline", "version", "variant", "entity")}, "output": output,
             "score": score, "latency_ms": latency, "error": text["error"]}
    features = {c: _feature(df[c]) for c in df.columns if c not in PREDICTION_COLUMNS}
    return pd.DataFrame({**fixed, **features}, index=df.index)


def _feature(values: pd.Series) -> pd.Series:
    """A feature column as pyarrow can store it: as given when its values share a type,
    else as text (one bad batch must not block the log)."""
    try:
        pa.array(values, from_pandas=True)
        return values
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return values.map(as_text).astype(object)
