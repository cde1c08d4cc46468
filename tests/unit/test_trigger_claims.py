"""Claims, compare-and-set and the trigger rules on a real SQLite metadata store, without Ray:
what makes two watchers fire once, a schedule fire once per time, and a blocked fire say why.
Submissions here go to a cluster that is not there (a closed port): a real failure, recorded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlplatform.runtime.local import free_port
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.triggers import claims, sources
from mlplatform.triggers.watcher import Watcher

T0 = dt.datetime(2026, 3, 2, 1, 0, 0)  # a Monday, 01:00 UTC


def _settings(tmp_path: Path) -> Settings:
    # A dashboard address nothing listens on: every submission fails for real, fast.
    return load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"),
                              "PLATFORM_RAY_ADDRESS": f"http://127.0.0.1:{free_port()}"})


def _spec(tmp_path: Path, **triggers: object) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "p",
        "source": {"path": str(tmp_path / "src"), "entity_column": "id", "timestamp_column": "t"},
        "triggers": triggers})


def _batch(tmp_path: Path, name: str, seed: int) -> None:
    (tmp_path / "src").mkdir(exist_ok=True)
    pq.write_table(pa.table({"id": [seed, seed + 1], "t": [seed, seed]}), tmp_path / "src" / name)


def test_one_claim_per_pipeline_and_only_its_owner_releases_it(tmp_path: Path) -> None:
    store = Services(_settings(tmp_path)).metadata
    assert claims.claim_run(store, "p", "run-a", cause="new_data", watcher="w1", now=T0)
    assert not claims.claim_run(store, "p", "run-b", cause="schedule", watcher="w2", now=T0)
    assert claims.claim_run(store, "q", "run-c", cause="schedule", watcher="w2", now=T0)  # another pipeline
    assert not claims.release_run(store, "p", "run-b")  # not the claim's run: nothing released
    assert claims.active_run(store, "p").run_id == "run-a"  # type: ignore[union-attr]
    assert claims.release_run(store, "p", "run-a")
    assert claims.active_run(store, "p") is None
    assert claims.claim_run(store, "p", "run-b", cause="schedule", watcher="w2", now=T0)


def test_of_two_writers_of_one_trigger_state_only_one_wins(tmp_path: Path) -> None:
    store = Services(_settings(tmp_path)).metadata
    seen1 = claims.read_state(store, "p", "schedule")
    seen2 = claims.read_state(store, "p", "schedule")
    assert claims.cas_state(store, seen1, {"last": "a"}, now=T0)  # the first insert
    assert not claims.cas_state(store, seen2, {"last": "b"}, now=T0)  # a second insert: lost
    now = claims.read_state(store, "p", "schedule")
    assert (now.revision, now.state) == (1, {"last": "a"})
    assert claims.cas_state(store, now, {"last": "c"}, now=T0)
    assert not claims.cas_state(store, now, {"last": "d"}, now=T0)  # read before the change: lost
    assert claims.read_state(store, "p", "schedule").state == {"last": "c"}


def test_a_new_batch_is_proposed_to_one_watcher_once(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    services = Services(settings)
    spec = _spec(tmp_path, new_data=True)
    _batch(tmp_path, "day1.parquet", 1)
    seen = claims.read_state(services.metadata, "p", "new_data")
    p1 = sources.check_new_data(spec, services, seen, T0)
    p2 = sources.check_new_data(spec, services, seen, T0)  # a second watcher, same moment
    assert p1 is not None and p2 is not None
    assert p1.details["files"] == [str(tmp_path / "src" / "day1.parquet")]
    assert claims.cas_state(services.metadata, p1.seen, p1.state or {}, now=T0)
    assert not claims.cas_state(services.metadata, p2.seen, p2.state or {}, now=T0)
    after = claims.read_state(services.metadata, "p", "new_data")
    assert sources.check_new_data(spec, services, after, T0) is None  # claimed: not again
    (tmp_path / "src" / "copy-of-day1.parquet").write_bytes((tmp_path / "src" / "day1.parquet").read_bytes())
    assert sources.check_new_data(spec, services, after, T0) is None  # same content: not new
    _batch(tmp_path, "day2.parquet", 2)
    p3 = sources.check_new_data(spec, services, after, T0)
    assert p3 is not None and [Path(f).name for f in p3.details["files"]] == ["day2.parquet"]


def test_a_schedule_fires_once_at_its_time_and_counts_from_the_first_watch(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = Services(settings).metadata
    spec = _spec(tmp_path, schedule={"cron": "0 3 * * *"})

    def check(now: dt.datetime) -> sources.Proposal | None:
        return sources.check_schedule(spec, claims.read_state(store, "p", "schedule"), now)

    first = check(T0)
    assert first is not None and not first.fire  # the first watch: start counting, fire nothing
    assert claims.cas_state(store, first.seen, first.state or {}, now=T0)
    assert check(T0 + dt.timedelta(hours=1, minutes=59)) is None
    due = check(T0 + dt.timedelta(hours=2, seconds=1))
    assert due is not None and due.fire and due.cause == "schedule" and due.retrain
    assert due.details["scheduled_at"] == "2026-03-02T03:00:00"
    assert claims.cas_state(store, due.seen, due.state or {}, now=T0)
    assert check(T0 + dt.timedelta(hours=2, minutes=30)) is None  # never twice for 03:00
    late = check(T0 + dt.timedelta(days=3, hours=3))  # three days unwatched: one fire, not three
    assert late is not None and late.details == {"scheduled_at": "2026-03-05T03:00:00", "missed": 2}


def test_a_watcher_records_why_a_fire_started_nothing(tmp_path: Path) -> None:
    """Failed (no cluster), skipped (a run is active; min_interval): each fire says why, and a
    batch whose submission failed is tried again on the next poll, by any watcher."""
    settings = _settings(tmp_path)
    spec = _spec(tmp_path, new_data={"poll": "30s"}, schedule={"cron": "0 3 * * *"}, min_interval="1h")
    spec_file = tmp_path / "p.yaml"
    spec_file.write_text("name: p\n")
    w1 = Watcher(spec, settings, spec_file, name="w1", working_dir=tmp_path)
    w2 = Watcher(spec, settings, spec_file, name="w2", working_dir=tmp_path)
    store = w1.services.metadata
    _batch(tmp_path, "day1.parquet", 1)
    out = w1.tick(T0).outcomes
    assert [(o.trigger, o.status) for o in out] == [("new_data", "failed")]
    assert "submitting failed" in out[0].reason and "day1.parquet" in out[0].reason
    assert claims.active_run(store, "p") is None  # the claim of a run never submitted is released
    assert [(o.trigger, o.status) for o in w2.tick(T0).outcomes] == [("new_data", "failed")]  # retried

    # A claim that never got a job is stale after 10 minutes: this one is fresh.
    claims.claim_run(store, "p", "someone-elses-run", cause="manual", watcher="w9",
                     now=T0 + dt.timedelta(hours=2))
    out = w1.tick(T0 + dt.timedelta(hours=2, seconds=1)).outcomes
    assert [(o.trigger, o.status) for o in out] == [("new_data", "waiting"), ("schedule", "skipped")]
    assert "a run is active: someone-elses-run" in out[1].reason  # the 03:00 fire is spent
    claims.release_run(store, "p", "someone-elses-run")
    day2 = T0 + dt.timedelta(days=1)
    claims.record_fire(store, pipeline="p", trigger="schedule", reason="earlier", status="submitted",
                       now=day2 + dt.timedelta(hours=1, minutes=30), watcher="w9")
    out = w2.tick(day2 + dt.timedelta(hours=2, minutes=1)).outcomes
    assert [(o.trigger, o.status) for o in out] == [("new_data", "waiting"), ("schedule", "skipped")]
    assert "min_interval 1h" in out[1].reason and "2026-03-03T03:00:00" in out[1].reason
    assert [o.trigger for o in w1.tick(day2 + dt.timedelta(hours=2, minutes=2)).outcomes] == ["new_data"]
    fired = claims.fires(store, "p")
    assert [(f.trigger, f.status) for f in fired] == [
        ("schedule", "skipped"), ("schedule", "submitted"), ("schedule", "skipped"),
        ("new_data", "failed"), ("new_data", "failed")]


def test_a_failing_trigger_does_not_stop_the_others(tmp_path: Path) -> None:
    """The source cannot be listed (a storage scheme nothing knows): the tick records the error,
    naming the trigger, and the schedule still fires; the next tick tries again."""
    settings = _settings(tmp_path)
    spec = PipelineSpec.model_validate({
        "name": "p", "source": {"path": "nosuch://bucket/batches", "entity_column": "id",
                                "timestamp_column": "t"},
        "triggers": {"new_data": {"poll": "1s"}, "schedule": {"cron": "* * * * *"}}})
    spec_file = tmp_path / "p.yaml"
    spec_file.write_text("name: p\n")
    w = Watcher(spec, settings, spec_file, name="w", working_dir=tmp_path)
    w.tick(T0)
    report = w.tick(T0 + dt.timedelta(minutes=1, seconds=5))
    assert [o.trigger for o in report.outcomes] == ["schedule"]
    assert len(report.errors) == 1 and report.errors[0].startswith("trigger new_data: ")
    assert "nosuch://bucket/batches" in report.errors[0]
    assert w.tick(T0 + dt.timedelta(minutes=1, seconds=10)).errors == report.errors


@pytest.mark.parametrize("poll", ["30s"])
def test_new_data_polls_at_its_interval(tmp_path: Path, poll: str) -> None:
    settings = _settings(tmp_path)
    spec = _spec(tmp_path, new_data={"poll": poll})
    spec_file = tmp_path / "p.yaml"
    spec_file.write_text("name: p\n")
    w = Watcher(spec, settings, spec_file, name="w", working_dir=tmp_path)
    w.tick(T0)
    _batch(tmp_path, "day1.parquet", 1)
    assert w.tick(T0 + dt.timedelta(seconds=10)).outcomes == []  # not polled yet
    assert [o.status for o in w.tick(T0 + dt.timedelta(seconds=31)).outcomes] == ["failed"]
