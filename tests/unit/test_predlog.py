"""The prediction log: batched off the request path by a background thread, nothing lost or
doubled (concurrent appends, failing writes, close), and its read side (features that differ
between versions, the request-id lookup, feedback and its join)."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlplatform.features.offline_store import OfflineStore
from mlplatform.serving.predictions import (
    PREDICTION_COLUMNS,
    joined_feedback,
    prediction_files,
    predictions_dataset,
    read_feedback,
    read_predictions,
)
from serve.predlog import BatchedLog, feedback_writer, known_request_ids, prediction_writer

T0 = dt.datetime(2026, 3, 1, 12)
PIPE, SVC = "pl", "svc"


def _rec(rid: str, *, version: str = "1", ts: dt.datetime = T0, output: Any = 1.5,
         **features: Any) -> dict[str, Any]:
    return {"request_id": rid, "event_ts": ts, "pipeline": PIPE, "version": version,
            "variant": "champion", "entity": f"e-{rid}", "output": output, "latency_ms": 2.5,
            **(features or {"x": 1.0})}


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


class Recorder:
    """A write function that keeps the frames and the thread that wrote each; it fails
    its first `failures` calls."""

    def __init__(self, failures: int = 0):
        self.failures, self.calls, self.frames = failures, 0, []
        self.threads: list[str] = []

    def __call__(self, df: pd.DataFrame) -> None:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if self.calls <= self.failures:
            raise OSError(f"storage down (call {self.calls})")
        self.frames.append(df)

    def ids(self) -> list[str]:
        return [r for f in self.frames for r in f["request_id"]]


def test_concurrent_appends_land_exactly_once(tmp_path: Path) -> None:
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_rows=500, max_delay_s=0.05)

    def worker(t: int) -> None:
        for chunk in range(50):  # 50 requests of 25 predictions each
            log.append([_rec(f"t{t}-{chunk}-{i}", x=float(i)) for i in range(25)])

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    got = read_predictions(str(tmp_path), PIPE, SVC)
    assert len(got) == 8 * 1250 == log.written and log.pending == 0
    assert got["request_id"].is_unique
    _, files = prediction_files(str(tmp_path), PIPE, SVC)
    assert 1 <= len(files) < 100  # batches, not one file per request (400 appends)
    assert list(got.columns[:len(PREDICTION_COLUMNS)]) == list(PREDICTION_COLUMNS)


def test_rows_reach_storage_without_a_flush(tmp_path: Path) -> None:
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_delay_s=0.2)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    log.append([_rec("a", ts=now), _rec("b", ts=now)])
    log.append([_rec("c", ts=now)])
    try:
        assert _eventually(lambda: len(read_predictions(str(tmp_path), PIPE, SVC)) == 3)
        assert log.written == 3 and log.pending == 0
    finally:
        log.close()


def test_append_does_no_io_the_thread_writes(tmp_path: Path) -> None:
    rec = Recorder()
    log = BatchedLog(rec, max_rows=10, max_delay_s=60)
    log.append([_rec(f"r{i}") for i in range(5)])
    assert rec.calls == 0 and log.pending == 5 and log.written == 0
    log.append([_rec(f"s{i}") for i in range(5)])  # max_rows reached: the thread is woken
    assert _eventually(lambda: log.written == 10)
    assert rec.threads == ["predlog-writer"] and len(rec.frames) == 1  # one frame, not one per append
    log.close()
    assert rec.calls == 1  # nothing was pending


def test_a_write_that_fails_twice_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(failures=2)
    log = BatchedLog(rec, max_delay_s=0.05)
    with caplog.at_level(logging.WARNING, logger="serve.predlog"):
        log.append([_rec(f"a{i}") for i in range(100)])
        assert _eventually(lambda: rec.calls >= 1)
        log.append([_rec(f"b{i}") for i in range(50)])  # arrives while the store is down
        assert _eventually(lambda: log.written == 150)
    log.close()
    assert rec.calls >= 3 and log.pending == 0
    ids = rec.ids()
    assert sorted(ids) == sorted([f"a{i}" for i in range(100)] + [f"b{i}" for i in range(50)])
    assert len([r for r in caplog.records if "failed, retrying" in r.message]) == 2


def test_a_failed_flush_keeps_its_rows_in_order() -> None:
    rec = Recorder(failures=2)
    log = BatchedLog(rec, max_delay_s=60)
    log.append([_rec("r1"), _rec("r2")])
    with pytest.raises(OSError, match="call 1"):
        log.flush()
    log.append([_rec("r3")])
    with pytest.raises(OSError, match="call 2"):
        log.flush()
    assert log.pending == 3 and log.written == 0
    assert log.flush() == 3 and rec.ids() == ["r1", "r2", "r3"]
    assert log.flush() == 0 and rec.calls == 3
    log.close()


def test_close_is_idempotent_and_logs_what_it_could_not_write(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    log = BatchedLog(rec, max_delay_s=60)
    log.append([_rec("r1")])
    log.close()
    log.close()
    assert rec.calls == 1 and log.written == 1
    log.append([_rec("late")])  # e.g. a shadow answer finishing during shutdown
    log.close()
    assert rec.ids() == ["r1", "late"]

    broken = BatchedLog(Recorder(failures=10**9), max_delay_s=60)
    broken.append([_rec(f"r{i}") for i in range(7)])
    with caplog.at_level(logging.ERROR, logger="serve.predlog"):
        broken.close()  # never raises
        broken.close()
    lines = [r.message for r in caplog.records]
    assert len(lines) == 2 and all("7 row(s) could not be written at close" in m for m in lines)
    assert broken.pending == 7
    broken.close()


def test_dropping_the_last_reference_writes_what_is_pending() -> None:
    rec = Recorder()
    log = BatchedLog(rec, max_delay_s=60)
    log.append([_rec("r1"), _rec("r2")])
    del log
    gc.collect()
    assert rec.ids() == ["r1", "r2"]


def test_versions_with_different_features_read_back_with_nulls(tmp_path: Path) -> None:
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_delay_s=60)
    log.append([_rec("a", version="1", output=1, x=0.5, y=3, w=1.0),
                _rec("b", version="1", output="cat", x=None, y=None, w=2.0)])
    log.flush()
    log.append([{**_rec("c", version="2", output=2.25, x=1.5, z="red", w="big"), "entity": None},
                {**_rec("d", version="2", output=True, x=2.5, z=None, w="small"), "score": 0.9}])
    log.close()
    got = read_predictions(str(tmp_path), PIPE, SVC).set_index("request_id")
    assert list(got.index) == ["a", "b", "c", "d"]
    assert got["y"].isna().tolist() == [False, True, True, True] and got.loc["a", "y"] == 3
    assert got["z"].tolist()[2] == "red" and got["z"].isna().tolist() == [True, True, False, True]
    assert got["x"].tolist()[0] == 0.5 and pd.isna(got.loc["b", "x"])
    # w was a number in version 1 and text in version 2: it reads back as text
    assert got["w"].tolist() == ["1", "2", "big", "small"]  # arrow casts 1.0 as "1"
    # output as text (the label as given), score its number or the record's own score
    assert got["output"].tolist() == ["1", "cat", "2.25", "True"]
    assert got["score"].tolist()[0] == 1.0 and pd.isna(got.loc["b", "score"])
    assert got["score"].tolist()[2:] == [2.25, 0.9]
    assert pd.isna(got.loc["c", "entity"]) and got.loc["a", "entity"] == "e-a"
    assert got["version"].tolist() == ["1", "1", "2", "2"]
    assert str(got["event_ts"].dtype).startswith("datetime64") and got["event_ts"].iloc[0] == T0


def test_time_bounds_prune_dates_and_uncommitted_parts_are_invisible(tmp_path: Path) -> None:
    write = prediction_writer(str(tmp_path), PIPE, SVC)
    zoned = dt.datetime(2026, 3, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 2 Mar 23:00 UTC
    log = BatchedLog(write, max_delay_s=60)
    log.append([_rec("d1", ts=T0), _rec("d2", ts=T0 + dt.timedelta(days=1)), _rec("d3", ts=zoned)])
    log.close()
    # A part whose write never committed (it died before its manifest): never read.
    stray = tmp_path / "features" / PIPE / "served" / SVC / "date=2026-03-02" / "part-dead.parquet"
    pd.DataFrame({"request_id": ["ghost"], "entity": ["e"], "event_ts": [T0]}).to_parquet(stray)
    assert read_predictions(str(tmp_path), PIPE, SVC)["request_id"].tolist() == ["d1", "d2", "d3"]
    got = read_predictions(str(tmp_path), PIPE, SVC, since=T0 + dt.timedelta(hours=1),
                           until=dt.datetime(2026, 3, 2, 23))
    assert got["request_id"].tolist() == ["d2", "d3"]
    assert got["event_ts"].iloc[1] == dt.datetime(2026, 3, 2, 23)
    _, files = prediction_files(str(tmp_path), PIPE, SVC, since=dt.datetime(2026, 3, 2))
    assert [Path(f).parent.name for f in files] == ["date=2026-03-02"]
    assert "ghost" not in known_request_ids(str(tmp_path), PIPE, SVC, ["ghost"])


def test_rows_that_cannot_be_stored_are_dropped_not_retried(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_delay_s=60)
    with caplog.at_level(logging.ERROR, logger="serve.predlog"):
        log.append([_rec("ok", x=1.0), {**_rec("no-ts"), "event_ts": None}, {**_rec("x"), "request_id": None},
                    _rec("text", x="n/a")])
        assert log.flush() == 4
    assert "2 of 4 record(s)" in caplog.text
    got = read_predictions(str(tmp_path), PIPE, SVC)
    assert got["request_id"].tolist() == ["ok", "text"] and got["x"].tolist() == ["1.0", "n/a"]
    log.close()


def test_known_request_ids(tmp_path: Path) -> None:
    assert known_request_ids(str(tmp_path), PIPE, SVC, ["r1"]) == set()  # no log yet
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_delay_s=60)
    log.append([_rec(f"r{i}") for i in range(20)])
    log.flush()
    log.append([_rec("later", version="2", ts=T0 + dt.timedelta(days=2), z="new")])
    log.close()
    assert known_request_ids(str(tmp_path), PIPE, SVC, ["r3", "later", "nope", "r3"]) == {"r3", "later"}
    assert known_request_ids(str(tmp_path), PIPE, SVC, []) == set()
    assert known_request_ids(str(tmp_path), PIPE, SVC, ["r3", "later"],
                             since=T0 + dt.timedelta(days=1)) == {"later"}
    assert known_request_ids(str(tmp_path), PIPE, "other", ["r3"]) == set()


def test_feedback_round_trip_and_join(tmp_path: Path) -> None:
    storage = f"file://{tmp_path}"
    preds = BatchedLog(prediction_writer(storage, PIPE, SVC), max_delay_s=60)
    preds.append([_rec("r1", output=1), {**_rec("r1", output=0), "variant": "shadow", "version": "2"},
                  _rec("r2", output="cat"), _rec("r3", output=2.5), _rec("r4", output=True),
                  _rec("r5", output=7)])
    preds.close()
    fb = BatchedLog(feedback_writer(storage, PIPE), max_delay_s=60)
    later = T0 + dt.timedelta(hours=1)
    fb.append([{"request_id": "r1", "label": 0, "event_ts": later},
               {"request_id": "r2", "label": "dog", "event_ts": later},
               {"request_id": "r3", "label": 2.0, "event_ts": later},
               {"request_id": "r4", "label": True, "event_ts": later}])
    fb.flush()
    fb.append([{"request_id": "r1", "label": 1, "event_ts": later + dt.timedelta(minutes=5)}])  # a correction
    fb.close()
    assert sorted(p.name.split("=")[0] for p in (tmp_path / "features" / PIPE / "feedback").iterdir()) == [
        "_commits", "date"]
    got = read_feedback(storage, PIPE)
    assert got["request_id"].tolist() == ["r1", "r2", "r3", "r4", "r1"]
    assert got["label"].tolist() == ["0", "dog", "2.0", "True", "1"]
    assert got["label_value"].tolist()[:1] + got["label_value"].tolist()[2:] == [0.0, 2.0, 1.0, 1.0]
    assert pd.isna(got["label_value"].iloc[1])

    joined = joined_feedback(storage, PIPE, SVC)
    assert len(joined) == 6  # every prediction, the shadow's too
    by = {(r.request_id, r.variant): r for r in joined.itertuples()}
    assert by[("r1", "champion")].label == "1" and by[("r1", "shadow")].label == "1"  # the latest label
    assert by[("r1", "champion")].output == "1" and by[("r1", "shadow")].output == "0"
    assert (by[("r3", "champion")].score, by[("r3", "champion")].label_value) == (2.5, 2.0)
    assert by[("r4", "champion")].label == by[("r4", "champion")].output == "True"
    assert pd.isna(by[("r5", "champion")].label) and pd.isna(by[("r5", "champion")].feedback_ts)
    assert by[("r2", "champion")].feedback_ts == later


def test_reads_of_an_empty_log(tmp_path: Path) -> None:
    assert read_predictions(str(tmp_path), PIPE, SVC).empty
    assert read_feedback(str(tmp_path), PIPE).empty
    joined = joined_feedback(str(tmp_path), PIPE, SVC)
    assert joined.empty and {"request_id", "output", "label", "feedback_ts"} <= set(joined.columns)


def test_a_bad_service_name_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="lower-case"):
        prediction_writer(str(tmp_path), PIPE, "Bad-Name")
    assert not OfflineStore(str(tmp_path), PIPE).committed_files(str(tmp_path))


@pytest.mark.ray
def test_predictions_dataset(tmp_path: Path, ray_connected: dict[str, str]) -> None:
    log = BatchedLog(prediction_writer(str(tmp_path), PIPE, SVC), max_delay_s=60)
    log.append([_rec(f"a{i}", x=float(i)) for i in range(10)])
    log.flush()
    log.append([_rec(f"b{i}", version="2", ts=T0 + dt.timedelta(days=1), z="new") for i in range(5)])
    log.close()
    ds = predictions_dataset(str(tmp_path), PIPE, SVC)
    rows = ds.to_pandas()
    assert len(rows) == 15 and rows["request_id"].is_unique
    assert rows["z"].isna().sum() == 10 and rows["x"].isna().sum() == 5
    later = predictions_dataset(str(tmp_path), PIPE, SVC, since=T0 + dt.timedelta(hours=1))
    assert sorted(later.to_pandas()["request_id"]) == [f"b{i}" for i in range(5)]
    assert predictions_dataset(str(tmp_path), PIPE, "none").count() == 0
