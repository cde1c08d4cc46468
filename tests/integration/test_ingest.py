"""The ingest step on the session's real Ray cluster, in-process (manual mode)."""

from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from mlplatform import storage
from mlplatform.data.ingest import snapshot_hash
from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from mlplatform.pipeline import run_pipeline
from mlplatform.metadata.store import MetadataStore
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec

pytestmark = pytest.mark.ray


def _spec(name: str, path: str, fmt: str = "parquet") -> PipelineSpec:
    return PipelineSpec.model_validate({"name": name, "source": {
        "path": path, "format": fmt, "entity_column": "customer_id",
        "timestamp_column": "event_ts", "label_column": "churned"}})


def _settings(tmp_path: Path):  # noqa: ANN202
    return load_settings(env={"PLATFORM_HOME": str(tmp_path / "home")})


def test_ingest_snapshots_new_files_once(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=200, seed=5))
    settings = _settings(tmp_path)
    spec = _spec("ing", str(data))
    first = run_pipeline(spec, settings, log=lambda m: None)
    assert first.status == "SUCCEEDED", first.message
    store = MetadataStore(settings.metadata_url)
    snap = store.artifacts_of_run(first.run_id, "ingest")[0]
    fs = storage.resolve(str(data))[0]
    assert snap.content_hash == snapshot_hash([storage.sha256_file(fs, f.path) for f in files])
    assert snap.properties["rows"] == 400
    stored = pads.dataset(snap.uri, format="parquet").to_table().to_pandas()
    original = pd.concat([pd.read_parquet(f.path) for f in files])
    assert sorted(stored["customer_id"]) == sorted(original["customer_id"])
    assert set(stored.columns) == set(original.columns)

    second = run_pipeline(spec, settings, log=lambda m: None)
    assert second.status == "SUCCEEDED" and "nothing new to ingest" in second.message

    # A new day arrives: only it is ingested. A touched old file is not new.
    (data / Path(files[0].path).name).touch()
    more = write_demo_data(tmp_path / "more", DemoDataConfig(days=3, rows_per_day=200, seed=5))
    Path(more[2].path).rename(data / Path(more[2].path).name)
    third = run_pipeline(spec, settings, log=lambda m: None)
    snap3 = store.artifacts_of_run(third.run_id, "ingest")[0]
    assert snap3.properties["rows"] == 200
    assert [a.uri for a in store.artifacts_of_run(third.run_id, "ingest", "INPUT")] == [
        str(data / Path(more[2].path).name)]


def test_csv_source_through_a_file_uri(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "csv"
    data.mkdir()
    files = write_demo_data(tmp_path / "pq", DemoDataConfig(days=2, rows_per_day=100, seed=9))
    for f in files:
        pd.read_parquet(f.path).to_csv(data / (Path(f.path).stem + ".csv"), index=False)
    report = run_pipeline(_spec("csvp", f"file://{data}", "csv"), _settings(tmp_path),
                          log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store = MetadataStore(_settings(tmp_path).metadata_url)
    assert store.artifacts_of_run(report.run_id, "ingest")[0].properties["rows"] == 200


def test_unreadable_batch_fails_naming_the_file_and_resumes_when_fixed(
        ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    write_demo_data(data, DemoDataConfig(days=1, rows_per_day=100, seed=1))
    bad = data / "events_2026-01-02.parquet"
    bad.write_bytes(b"this is not parquet")
    settings = _settings(tmp_path)
    report = run_pipeline(_spec("broken", str(data)), settings, run_id="fix-me", log=lambda m: None)
    assert report.status == "FAILED"
    assert str(bad) in report.message and "cannot be read as parquet" in report.message
    store = MetadataStore(settings.metadata_url)
    assert store.consumed_hashes("broken", "ingest", "source_file") == set()
    assert store.run("fix-me").steps[0].status == "FAILED"  # type: ignore[union-attr]

    bad.unlink()
    fixed = run_pipeline(_spec("broken", str(data)), settings, run_id="fix-me", log=lambda m: None)
    assert fixed.status == "SUCCEEDED"
    steps = store.run("fix-me").steps  # type: ignore[union-attr]
    assert [(s.step, s.status) for s in steps] == [("ingest", "FAILED"), ("ingest", "COMPLETE"),
                                                   ("validate", "COMPLETE"), ("featurize", "COMPLETE"),
                                                   ("training_set", "COMPLETE"), ("train", "COMPLETE"),
                                                   ("evaluate", "COMPLETE"), ("register", "COMPLETE")]


def test_missing_source_path_is_a_clear_failure(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    report = run_pipeline(_spec("nosrc", str(tmp_path / "nowhere")), _settings(tmp_path),
                          log=lambda m: None)
    assert report.status == "FAILED"
    assert "source.path" in report.message and "nowhere" in report.message


def test_a_column_of_mixed_types_across_files_is_a_clear_failure(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=100, seed=2))
    df = pd.read_parquet(files[1].path)
    df["age"] = df["age"].map(lambda v: f"{v:.0f}")  # the second file's ages are strings
    df.to_parquet(files[1].path, index=False)
    report = run_pipeline(_spec("mixed", str(data)), _settings(tmp_path), log=lambda m: None)
    assert report.status == "FAILED"
    assert "column 'age' has mixed types" in report.message and files[1].path in report.message
