"""Anomalies in the metadata, on a recorded history of 60 normal daily runs (tests/data/
anomaly_history.json, written by tests/data/make_anomaly_history.py): log-normal step durations
with moderately slower runs among them, half the rows at weekends, quarantines, holdout metrics and
live quality with small noise. The history goes into a real SQLite metadata store through the
store's own calls (start_run, start_execution, finish_execution with the steps' summaries, the
train step's TrainedModel artifact), back-dated so that the runs fall on consecutive days.

What must hold (issue 14, item 5): checking every one of the 60 runs raises no alert; one slow
step, one half-empty batch and one metric drop each raise exactly one; nothing is judged before
the minimum history; a weekend's normal half batch is not an anomaly thanks to the weekday
baseline, and would be without it; a history that never varied does not make a tiny change an
anomaly (the floor on the MAD).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mlplatform.artifacts import TrainedModel
from mlplatform.metadata.schema import ContextRow, ExecutionRow, MonitorResultRow, utcnow
from mlplatform.monitoring.alerts import list_alerts
from mlplatform.monitoring.anomaly import Thresholds, check_run, detect
from mlplatform.services import Services
from mlplatform.settings import load_settings

HISTORY = json.loads((Path(__file__).parents[1] / "data" / "anomaly_history.json").read_text())
PIPELINE = HISTORY["pipeline"]
RUNS: list[dict[str, Any]] = HISTORY["runs"]
NEXT_DAY = dt.datetime.fromisoformat(RUNS[-1]["at"]) + dt.timedelta(days=1)  # a Friday


def _services(home: Path) -> Services:
    return Services(load_settings(env={"PLATFORM_HOME": str(home)}))


def _summary(step: str, run: dict[str, Any]) -> dict[str, Any]:
    """The summary each step's StepResult gives (the parts the detector reads), plus what
    run_pipeline adds (message, stop_run)."""
    out: dict[str, Any] = {"message": "", "stop_run": False}
    if step == "ingest":
        out.update(files_found=1, files_new=1, files_ingested=1, rows=run["rows_in"])
    elif step == "validate":
        out.update(rows_in=run["rows_in"], rows_valid=run["rows_valid"],
                   rows_quarantined=run["rows_quarantined"], failures=0, drifted_features=[],
                   dataset_drift=False, retrain_trigger=False)
    elif step == "train":
        out["models"] = [{"name": PIPELINE, "holdout": run["holdout"], "config": {}, "trials": 0}]
    return out


def record(services: Services, run: dict[str, Any]) -> str:
    """One run as run_pipeline records it, moved back to its day (02:00 UTC, steps back to back)."""
    store, run_id = services.metadata, run["run_id"]
    at = dt.datetime.fromisoformat(run["at"])
    store.start_run(PIPELINE, run_id, {"cause": "schedule", "steps": list(run["durations"])})
    offset = dt.timedelta(0)
    for step, seconds in run["durations"].items():
        ex = store.start_execution(run_id, step, {"spec_hash": "h"})
        with store.session() as s:  # started `seconds` ago: the store computes the duration itself
            s.get(ExecutionRow, ex).started_at = utcnow() - dt.timedelta(seconds=seconds)
        if step == "train":
            model = store.put(TrainedModel(
                uri=f"runs:/{run_id}/model", content_hash=f"sha-{run_id}", model_name=PIPELINE,
                mlflow_run_id=run_id, estimator="sklearn.ensemble.HistGradientBoostingClassifier",
                holdout=run["holdout"], training_set=f"ts://{run_id}", training_set_id=1,
                model_spec={"task": "classification", "metric": HISTORY["metric"]}, evaluation_spec={}))
            store.link(ex, model.id or 0, "OUTPUT")
        store.finish_execution(ex, "COMPLETE", summary=_summary(step, run))
        with store.session() as s:
            row = s.get(ExecutionRow, ex)
            shift = at + offset - row.started_at
            row.started_at, row.ended_at = row.started_at + shift, row.ended_at + shift
            offset += dt.timedelta(seconds=row.duration_s)
    store.finish_run(run_id, "SUCCEEDED", "all steps complete")
    with store.session() as s:
        ctx = s.query(ContextRow).filter_by(type="pipeline_run", name=run_id).one()
        ctx.created_at = at
        ctx.properties = {**ctx.properties, "started_at": at.isoformat(),
                          "ended_at": (at + offset).isoformat()}
        for q in run["quality"]:
            s.add(MonitorResultRow(created_at=at - dt.timedelta(hours=q["hours_before"]), pipeline=PIPELINE,
                                   kind="quality", model_version="3", name="roc_auc", value=q["roc_auc"],
                                   window_start=at - dt.timedelta(hours=q["hours_before"] + 1),
                                   window_end=at - dt.timedelta(hours=q["hours_before"])))
    return run_id


def normal_run(day: dt.datetime, **change: Any) -> dict[str, Any]:
    """A run with each series at its typical value (the generator's centres), on `day`."""
    rows = 10_000 if day.weekday() < 5 else 5_000
    run = {"run_id": f"demo-{day:%Y%m%d}", "at": day.isoformat(),
           "durations": {"ingest": 3.0, "validate": 8.0, "featurize": 12.0, "training_set": 6.0,
                         "train": 40.0, "evaluate": 5.0, "register": 2.0, "promote": 1.0, "rollout": 4.0},
           "rows_in": rows, "rows_valid": rows - rows * 3 // 1000, "rows_quarantined": rows * 3 // 1000,
           "holdout": {"roc_auc": 0.86, "accuracy": 0.80, "f1": 0.74, "log_loss": 0.24},
           "quality": [{"hours_before": h, "roc_auc": 0.84} for h in (20, 14, 8, 2)]}
    for key, value in change.items():
        run[key] = {**run[key], **value} if isinstance(value, dict) else value
    return run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("anomaly") / "home"
    services = _services(home)
    for run in RUNS:
        record(services, run)
    services.metadata.engine.dispose()  # the WAL checkpointed: the folder can be copied
    return home


@pytest.fixture
def history(recorded: Path, tmp_path: Path) -> Services:
    """A copy of the recorded history, for a test that adds runs or alerts to it."""
    shutil.copytree(recorded, tmp_path / "home")
    return _services(tmp_path / "home")


def test_the_recorded_history_is_not_a_clean_one(history: Services) -> None:
    """The history has what makes naive thresholds noisy: slow runs, weekend batches, quarantines."""
    train = sorted(r["durations"]["train"] for r in RUNS)
    assert train[-1] / train[len(train) // 2] > 1.3
    weekend = [r["rows_in"] for r in RUNS if dt.datetime.fromisoformat(r["at"]).weekday() >= 5]
    assert len(weekend) == 16 and max(weekend) < 0.6 * min(r["rows_in"] for r in RUNS
                                                           if r["rows_in"] not in weekend)
    runs = history.metadata.runs(PIPELINE)
    assert len(runs) == 60 and runs[0].run_id == RUNS[-1]["run_id"]
    assert runs[0].created_at == dt.datetime.fromisoformat(RUNS[-1]["at"])


def test_checking_every_run_of_sixty_normal_ones_raises_no_alert(history: Services) -> None:
    raised = [a for run in RUNS for a in check_run(history, PIPELINE, run["run_id"])]
    assert raised == []
    assert list_alerts(history, pipeline=PIPELINE) == []


def _slow_step() -> dict[str, Any]:
    return normal_run(NEXT_DAY, durations={"featurize": 36.0})


def _half_batch() -> dict[str, Any]:
    return normal_run(NEXT_DAY, rows_in=5_000, rows_valid=4_985, rows_quarantined=15)


def _metric_drop() -> dict[str, Any]:
    # every metric the trainer logs is worse at once, as it is for a worse model: one alert still
    return normal_run(NEXT_DAY, holdout={"roc_auc": 0.82, "accuracy": 0.76, "f1": 0.70, "log_loss": 0.29})


@pytest.mark.parametrize(("make", "series", "value"), [
    (_slow_step, "duration:featurize", 36.0),
    (_half_batch, "rows_in", 5_000),
    (_metric_drop, f"metric:{PIPELINE}:roc_auc", 0.82),
    (lambda: normal_run(NEXT_DAY), None, None),
], ids=["slow_step", "half_empty_batch", "metric_drop", "normal_run"])
def test_one_anomaly_raises_exactly_one_alert(history: Services, make: Callable[[], dict[str, Any]],
                                              series: str | None, value: float | None) -> None:
    run_id = record(history, make())
    first = check_run(history, PIPELINE, run_id)
    assert [a.kind for a in first] == ([f"anomaly:{series}"] if series else [])
    assert check_run(history, PIPELINE, run_id) == []  # the same run again: no duplicate
    assert [a.id for a in list_alerts(history, pipeline=PIPELINE)] == [a.id for a in first]
    if not first:
        return
    alert = first[0]
    assert (alert.source, alert.run_id, alert.link) == ("anomaly", run_id, f"run:{run_id}")
    details = alert.details
    assert details["value"] == pytest.approx(value, rel=1e-3)
    low, high = details["expected_range"]
    assert not low <= value <= high
    assert details["history"]["n"] >= 40 and details["history"]["seasonal"] is False
    assert details["history"]["first"].startswith("2026-01-")
    shown = (lambda x: f"{x:,.0f}" if x >= 1000 else f"{x:.4g}")  # noqa: E731 - as the message shows numbers
    assert f"expected range {shown(low)} .. {shown(high)}" in alert.message
    assert f"from {details['history']['n']} earlier runs between 2026-01-05 and 2026-03-05" in alert.message
    if series == "duration:featurize":
        assert alert.step == "featurize" and details["expected"] == pytest.approx(12.0, rel=0.15)


def test_nothing_is_judged_before_the_minimum_history(tmp_path: Path) -> None:
    services = _services(tmp_path / "home")
    for run in RUNS[:9]:
        record(services, run)
    day = dt.datetime.fromisoformat(RUNS[9]["at"])
    slow = record(services, normal_run(day, durations={"featurize": 60.0}))
    assert detect(services, PIPELINE, run_id=slow) == []  # 9 earlier runs: too few to judge
    # with 10 earlier runs (the minimum), the same slow step is an anomaly
    later = tmp_path / "home2"
    services2 = _services(later)
    for run in RUNS[:10]:
        record(services2, run)
    slow2 = record(services2, normal_run(day + dt.timedelta(days=1), durations={"featurize": 60.0}))
    assert [a.series for a in detect(services2, PIPELINE, run_id=slow2)] == ["duration:featurize"]


def test_a_weekend_half_batch_is_normal_thanks_to_the_weekday_baseline(history: Services) -> None:
    sunday = RUNS[-5]  # the last Sunday of the history: 5,000-odd rows, half a weekday's
    assert dt.datetime.fromisoformat(sunday["at"]).weekday() == 6
    assert detect(history, PIPELINE, run_id=sunday["run_id"]) == []
    flat = detect(history, PIPELINE, run_id=sunday["run_id"], thresholds=Thresholds(seasonal=False))
    assert [a.series for a in flat] == ["rows_in"]  # without the weekday baseline it would alert
    # and the weekday baseline still sees a weekend batch that is half of a weekend's
    quarter = record(history, normal_run(NEXT_DAY + dt.timedelta(days=1), rows_in=2_500, rows_valid=2_492,
                                         rows_quarantined=8))
    found = detect(history, PIPELINE, run_id=quarter)
    assert [a.series for a in found] == ["rows_in"]
    assert found[0].history.seasonal and found[0].history.baseline == "earlier Saturdays"
    assert found[0].expected == pytest.approx(5_000, rel=0.05)


def test_a_history_that_never_varied_does_not_make_a_tiny_change_an_anomaly(tmp_path: Path) -> None:
    services = _services(tmp_path / "home")
    start = dt.datetime(2026, 2, 2, 2, 0)
    for day in range(12):  # weekdays and weekends alike: nothing ever changes, nothing quarantined
        record(services, normal_run(start + dt.timedelta(days=day), rows_in=10_000, rows_valid=10_000,
                                    rows_quarantined=0))
    tiny = record(services, normal_run(start + dt.timedelta(days=12), rows_in=9_990, rows_valid=9_987,
                                       rows_quarantined=3, durations={"train": 41.0},
                                       holdout={"roc_auc": 0.859}))
    assert detect(services, PIPELINE, run_id=tiny) == []
    big = record(services, normal_run(start + dt.timedelta(days=13), rows_in=10_000, rows_valid=9_000,
                                      rows_quarantined=1_000))
    assert [a.series for a in detect(services, PIPELINE, run_id=big)] == ["quarantine_rate"]


def test_the_newest_finished_run_is_the_default_and_a_fault_is_logged_not_raised(
        history: Services, caplog: pytest.LogCaptureFixture) -> None:
    run_id = record(history, _slow_step())
    assert [a.run_id for a in detect(history, PIPELINE)] == [run_id]
    assert detect(history, PIPELINE, now=dt.datetime.fromisoformat(RUNS[-1]["at"])) == []
    assert detect(history, "no-such-pipeline") == [] and detect(history, PIPELINE, run_id="nope") == []
    with history.metadata.session() as s:  # a real fault: the store lost a table
        s.execute(text("DROP TABLE monitor_result"))
    with caplog.at_level(logging.ERROR, logger="mlplatform.monitoring.anomaly"):
        assert check_run(history, PIPELINE, run_id) == []
    assert f"anomaly check of run {run_id} of {PIPELINE} failed" in caplog.text
