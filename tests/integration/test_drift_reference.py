"""The drift reference `training` on the session's real Ray: a champion trained on two
undrifted days, then two drifted days. Against the champion's training data both drifted
days drift; against the previous batch the second one does not (it looks like the first),
which is the drift a `previous_batch` reference loses."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlplatform import storage
from mlplatform.artifacts import TrainingSet, ValidatedBatch, ValidationReport
from mlplatform.data.reference import recorded_schema
from mlplatform.data.stats import DatasetStats
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.features.steps import window_statistics
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import run_pipeline
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec

pytestmark = pytest.mark.ray
CFG = DemoDataConfig(days=4, rows_per_day=400, entities=400, seed=11, drift_day=3)
SHIFTED = {"income", "days_since_last_login", "device"}  # what the generator moves from drift_day


def _spec(name: str, data: Path, reference: str) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": name,
        "source": {"path": str(data), "entity_column": "customer_id", "timestamp_column": "event_ts",
                   "label_column": "churned"},
        "validation": {"drift": {"reference": reference}},
        "features": {"views": [{"name": "profile", "ttl": "30d",
                                "features": ["age", "income", "sessions_7d", "days_since_last_login",
                                             "support_tickets_90d", "device", "plan"]}],
                     "services": [{"name": "churn", "features": ["profile:*"]}]},
        "model": {"feature_service": "churn", "params": {"max_iter": 20}},
    })


def _validate_summary(store: MetadataStore, run_id: str) -> dict[str, Any]:
    detail = store.run(run_id)
    assert detail is not None
    (execution,) = [e for e in detail.steps if e.step == "validate" and e.status == "COMPLETE"]
    return execution.summary


@pytest.fixture(scope="module")
def drift_runs(ray_connected, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # noqa: ANN001
    """Pipeline `drift-train` (reference training) validates day 1, trains a champion on days 1-2
    (two batches) with day 2's run, then only ingests and validates days 3 and 4; `drift-prev`
    (reference previous_batch) ingests and validates the same four days."""
    root = tmp_path_factory.mktemp("drift")
    data = root / "data"
    settings = load_settings(env={"PLATFORM_HOME": str(root / "home")})
    train, prev = _spec("drift-train", data, "training"), _spec("drift-prev", data, "previous_batch")
    logs: list[str] = []
    quick = ["ingest", "validate"]
    runs = {}
    for day in (1, 2, 3, 4):
        write_day(data, CFG, day)
        runs[f"train-{day}"] = run_pipeline(train, settings, only=None if day == 2 else quick,
                                            log=logs.append)
        runs[f"prev-{day}"] = run_pipeline(prev, settings, only=quick, log=logs.append)
    for name, report in runs.items():
        assert report.status == "SUCCEEDED", (name, report.message, logs[-30:])
    store = MetadataStore(settings.metadata_url)
    return {"runs": runs, "store": store, "data": data,
            "summary": {k: _validate_summary(store, r.run_id) for k, r in runs.items()}}


def test_the_training_set_records_statistics_of_its_raw_rows(drift_runs: dict[str, Any]) -> None:
    store: MetadataStore = drift_runs["store"]
    (ts,) = store.run_outputs(drift_runs["runs"]["train-2"].run_id, TrainingSet)
    assert ts.statistics is not None and "/stats/drift-train/training/" in ts.statistics
    stats = DatasetStats.load(*storage.resolve(ts.statistics))
    raw = pd.concat([pd.read_parquet(p) for p in sorted(drift_runs["data"].glob("events_2026-01-0[12]*"))])
    assert stats.rows == ts.rows == len(raw) == 800
    income = stats.columns["income"].numeric
    assert income is not None and income.mean == pytest.approx(raw["income"].mean(), rel=1e-9)
    device = stats.columns["device"].categorical
    assert device is not None and device.counts == raw["device"].value_counts().to_dict()


def test_window_statistics_hold_only_the_rows_inside_the_window(drift_runs: dict[str, Any]) -> None:
    store: MetadataStore = drift_runs["store"]
    batches = [a for _, _, a in store.outputs_of(ValidatedBatch, pipeline="drift-train")]
    schema = recorded_schema(store, "drift-train")
    assert len(batches) == 4 and schema is not None
    day2 = pd.read_parquet(drift_runs["data"] / "events_2026-01-02.parquet")
    start, end = dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 2, 23)
    stats = window_statistics(batches, schema, "event_ts", start, end)
    inside = day2[day2["event_ts"] <= end]
    assert stats is not None and stats.rows == len(inside) < len(day2)
    income = stats.columns["income"].numeric
    assert income is not None and income.mean == pytest.approx(inside["income"].mean(), rel=1e-9)
    later = dt.datetime(2030, 1, 1)
    assert window_statistics(batches, schema, "event_ts", later, later + dt.timedelta(days=1)) is None


def test_without_a_champion_the_previous_batch_is_the_reference(drift_runs: dict[str, Any]) -> None:
    assert drift_runs["summary"]["train-1"]["drift_reference"] == (
        "none (first validated batch; reference training: no champion yet)")
    assert drift_runs["summary"]["prev-1"]["drift_reference"] == "none (first validated batch)"
    second = drift_runs["summary"]["train-2"]["drift_reference"]
    assert second.startswith("previous batch (") and second.endswith("; reference training: no champion yet)")


def test_both_drifted_days_drift_against_the_champions_training_data(drift_runs: dict[str, Any]) -> None:
    label = f"training data of champion drift-train v1 (run {drift_runs['runs']['train-2'].run_id}, 800 rows)"
    for day in (3, 4):
        summary = drift_runs["summary"][f"train-{day}"]
        assert summary["drift_reference"] == label
        assert SHIFTED <= set(summary["drifted_features"]), (day, summary["drifted_features"])
        assert summary["retrain_trigger"]
    store: MetadataStore = drift_runs["store"]
    (report,) = store.run_outputs(drift_runs["runs"]["train-4"].run_id, ValidationReport)
    assert report.drift_reference == drift_runs["summary"]["train-4"]["drift_reference"]
    day4 = [a for a in store.alerts("drift-train") if a.kind == "drift" and
            a.run_id == drift_runs["runs"]["train-4"].run_id]
    assert len(day4) == 1 and "against training data of champion drift-train v1" in day4[0].message


def test_against_the_previous_batch_the_second_drifted_day_shows_no_drift(drift_runs: dict[str, Any]) -> None:
    onset, second = drift_runs["summary"]["prev-3"], drift_runs["summary"]["prev-4"]
    assert onset["drift_reference"].startswith("previous batch (")
    assert SHIFTED <= set(onset["drifted_features"])  # day 3 against day 2: the onset is seen
    assert second["drift_reference"].startswith("previous batch (")
    assert not SHIFTED & set(second["drifted_features"]), second["drifted_features"]
