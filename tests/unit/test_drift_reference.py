"""The champion's training statistics as the drift reference, on a real SQLite metadata store:
which champion, and every reason there is none (so the validate step falls back, saying why)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from mlplatform.artifacts import ArtifactModel, ModelVersion, TrainingSet
from mlplatform.data.reference import champion_training_reference
from mlplatform.data.stats import DatasetStats
from mlplatform.metadata.store import MetadataStore


@pytest.fixture
def store(tmp_path: Path) -> MetadataStore:
    return MetadataStore(f"sqlite:///{tmp_path / 'metadata.db'}")


def _record(store: MetadataStore, run: str, step: str, art: ArtifactModel) -> ArtifactModel:
    """`art` as the output of a COMPLETE execution of `step` in run `run` of pipeline `p`."""
    store.start_run("p", run, {})
    execution = store.start_execution(run, step, {})
    art = store.put(art)
    store.link(execution, art.id or 0, "OUTPUT")
    store.finish_execution(execution, "COMPLETE")
    return art


def _training_set(store: MetadataStore, run: str, statistics: str | None) -> TrainingSet:
    ts = TrainingSet(uri=f"/ts/{run}/data.parquet", content_hash=run, rows=5, service="s", features=["x"],
                     report=f"/ts/{run}/report.json", service_hash="h", statistics=statistics)
    return _record(store, run, "training_set", ts)  # type: ignore[return-value]


def _version(store: MetadataStore, run: str, name: str, version: str, ts: TrainingSet | None) -> None:
    _record(store, run, "register", ModelVersion(
        uri=f"models:/{name}/{version}", name=name, version=version, passed=True, mlflow_run_id=run,
        training_set_id=ts.id if ts else None))


def _stats(tmp_path: Path, rows: int) -> str:
    folder = tmp_path / f"stats-{rows}"
    DatasetStats(rows=rows, columns={}, sample_size=10).save(pafs.LocalFileSystem(), str(folder))
    return str(folder)


def test_no_model_or_no_champion_means_no_reference(store: MetadataStore) -> None:
    assert champion_training_reference(store, "p", lambda n: "1").label == "no champion yet"
    _version(store, "r1", "p", "1", _training_set(store, "r1", None))
    found = champion_training_reference(store, "p", lambda n: None)
    assert found.stats is None and found.label == "no champion yet"


def test_a_champion_without_statistics_says_so(store: MetadataStore, tmp_path: Path) -> None:
    _version(store, "r1", "p", "1", _training_set(store, "r1", None))
    _version(store, "r2", "p", "2", None)
    _version(store, "r3", "p", "3", _training_set(store, "r3", str(tmp_path / "gone")))
    expected = {"1": "champion p v1 has no recorded training statistics (trained before they were recorded)",
                "2": "champion p v2 has no recorded training set",
                "3": f"the training statistics of champion p v3 at {tmp_path / 'gone'} cannot be read"}
    for version, label in expected.items():
        found = champion_training_reference(store, "p", lambda n, v=version: v)
        assert found.stats is None and found.label.startswith(label), found.label


def test_the_champions_statistics_are_the_reference(store: MetadataStore, tmp_path: Path) -> None:
    _version(store, "r1", "p", "1", _training_set(store, "r1", _stats(tmp_path, 7)))
    _version(store, "r2", "p", "2", _training_set(store, "r2", _stats(tmp_path, 9)))
    found = champion_training_reference(store, "p", lambda n: "1")  # a rollback: v1 is champion again
    assert found.stats is not None and found.stats.rows == 7
    assert found.label == "training data of champion p v1 (run r1, 7 rows)"


def test_with_segment_models_the_newest_champion_is_used(store: MetadataStore, tmp_path: Path) -> None:
    _version(store, "r1", "p", "1", None)
    _version(store, "r1", "p-free", "1", _training_set(store, "r1", _stats(tmp_path, 3)))
    _version(store, "r2", "p-paid", "4", _training_set(store, "r2", _stats(tmp_path, 8)))
    _version(store, "r3", "p-paid", "5", _training_set(store, "r3", _stats(tmp_path, 11)))
    champions = {"p-free": "1", "p-paid": "4"}  # p-paid v5 was rejected by the gate
    found = champion_training_reference(store, "p", champions.get)
    assert found.label == "training data of champion p-paid v4 (run r2, 8 rows)"
    assert champion_training_reference(store, "other", champions.get).label == "no champion yet"
