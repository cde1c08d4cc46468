"""The ingest step on the session's real Ray cluster, in-process (manual mode)."""

import json
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from mlplatform import storage
from mlplatform.artifacts import RejectedSourceFile
from mlplatform.data import ingest_step
from mlplatform.data.ingest import snapshot_hash
from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.store import MetadataStore
from mlplatform.pipeline import StepContext, registered_steps, run_pipeline
from mlplatform.services import Services
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec
from tests.backends import store_env
from tests.conftest import cli
from tests.unit.test_ingest_files import FlakyStorage

pytestmark = pytest.mark.ray


def _spec(name: str, path: str, fmt: str = "parquet", on_unreadable: str = "skip",
          placement: str = "auto") -> PipelineSpec:
    return PipelineSpec.model_validate({"name": name, "source": {
        "path": path, "format": fmt, "entity_column": "customer_id",
        "timestamp_column": "event_ts", "label_column": "churned", "on_unreadable": on_unreadable},
        "execution": {"placement": placement}})


def _env(tmp_path: Path) -> dict[str, str]:
    """The test's own home, with stores of its own (--backends cluster: PostgreSQL, S3, Redis)."""
    home = tmp_path / "home"
    return {"PLATFORM_HOME": str(home), **store_env(home, "ingest")}


def _settings(tmp_path: Path):  # noqa: ANN202
    return load_settings(env=_env(tmp_path))


def _ingest_events(store: MetadataStore, run_id: str) -> tuple[list[str], list[str]]:
    """(source files the run's ingest read, files it set aside)."""
    return ([a.uri for a in store.artifacts_of_run(run_id, "ingest", "INPUT")],
            [r.uri for r in _rejected(store, run_id)])


def _rejected(store: MetadataStore, run_id: str) -> list[RejectedSourceFile]:
    return [store.typed(RejectedSourceFile, a) for a in store.artifacts_of_run(run_id, "ingest")
            if a.kind == RejectedSourceFile.kind]


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
    spec = _spec("broken", str(data), on_unreadable="stop")
    report = run_pipeline(spec, settings, run_id="fix-me", log=lambda m: None)
    assert report.status == "FAILED"
    assert str(bad) in report.message and "cannot be read as parquet" in report.message
    assert "on_unreadable: stop" in report.message
    store = MetadataStore(settings.metadata_url)
    assert store.consumed_hashes("broken", "ingest", "source_file") == set()
    assert store.run("fix-me").steps[0].status == "FAILED"  # type: ignore[union-attr]

    assert [a for a in store.alerts("broken") if a.kind == "rejected_source_file"] == []
    bad.unlink()
    fixed = run_pipeline(spec, settings, run_id="fix-me", log=lambda m: None)
    assert fixed.status == "SUCCEEDED"
    steps = store.run("fix-me").steps  # type: ignore[union-attr]
    assert [(s.step, s.status) for s in steps] == [("ingest", "FAILED")] + [
        (name, "COMPLETE") for name in registered_steps()]


def test_missing_source_path_is_a_clear_failure(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    report = run_pipeline(_spec("nosrc", str(tmp_path / "nowhere")), _settings(tmp_path),
                          log=lambda m: None)
    assert report.status == "FAILED"
    assert "source.path" in report.message and "nowhere" in report.message


def _mixed_types(data: Path) -> list:
    """Three days; the first day's ages are strings (the odd one out, though it comes first)."""
    files = write_demo_data(data, DemoDataConfig(days=3, rows_per_day=100, seed=2))
    df = pd.read_parquet(files[0].path)
    df["age"] = df["age"].map(lambda v: f"{v:.0f}")
    df.to_parquet(files[0].path, index=False)
    return files


def test_a_column_of_mixed_types_across_files_sets_the_odd_one_aside(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    files = _mixed_types(tmp_path / "data")
    settings = _settings(tmp_path)
    report = run_pipeline(_spec("mixed", str(tmp_path / "data")), settings, log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store = MetadataStore(settings.metadata_url)
    assert _ingest_events(store, report.run_id) == ([files[1].path, files[2].path], [files[0].path])
    (rejected,) = _rejected(store, report.run_id)
    assert "column 'age' has type large_string, not double" in rejected.reason


def test_a_column_of_mixed_types_fails_under_stop(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    files = _mixed_types(tmp_path / "data")
    report = run_pipeline(_spec("mixed", str(tmp_path / "data"), on_unreadable="stop"), _settings(tmp_path),
                          log=lambda m: None)
    assert report.status == "FAILED"
    assert "column 'age' has type large_string" in report.message and files[0].path in report.message


def test_a_truncated_file_is_set_aside_and_not_retried_until_it_changes(
        ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=1, rows_per_day=100, seed=4))
    good = files[0].path
    whole = Path(good).read_bytes()
    bad = data / "events_2026-01-05.parquet"
    bad.write_bytes(whole[: len(whole) // 2])  # an upload cut off half way
    settings = _settings(tmp_path)
    env = _env(tmp_path)
    spec = _spec("trunc", str(data))
    logs: list[str] = []
    first = run_pipeline(spec, settings, run_id="trunc-1", log=logs.append)
    assert first.status == "SUCCEEDED", first.message
    assert {s.step: s.status for s in first.steps}["validate"] == "COMPLETE"  # the run went on
    store = MetadataStore(settings.metadata_url)
    assert _ingest_events(store, "trunc-1") == ([good], [str(bad)])
    shown = cli("runs", "show", "trunc-1", "--json", env=env)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (listed,) = json.loads(shown.stdout)["rejected_files"]
    assert listed["file"] == str(bad) and "cannot be read as parquet" in listed["reason"]
    assert listed["size_bytes"] == len(whole) // 2
    text = cli("runs", "show", "trunc-1", env=env).stdout
    assert "set aside, not ingested" in text and "cannot be read" in text

    second = run_pipeline(spec, settings, run_id="trunc-2", log=logs.append)
    assert second.status == "SUCCEEDED" and "nothing new to ingest" in second.message, second.message
    assert _ingest_events(store, "trunc-2") == ([], [])
    assert any("set aside by an earlier run" in line and str(bad) in line for line in logs)
    alerts = [a for a in store.alerts("trunc") if a.kind == "rejected_source_file"]
    assert len(alerts) == 1 and str(bad) in alerts[0].message and alerts[0].run_id == "trunc-1"

    # Fixed (new content, same name): tried again, and ingested.
    day2 = write_demo_data(tmp_path / "more", DemoDataConfig(days=2, rows_per_day=100, seed=4))[1]
    bad.write_bytes(Path(day2.path).read_bytes())
    third = run_pipeline(spec, settings, run_id="trunc-3", log=logs.append)
    assert third.status == "SUCCEEDED", third.message
    assert _ingest_events(store, "trunc-3") == ([str(bad)], [])


def test_when_every_new_file_is_bad_the_run_ends_with_nothing_ingestible(
        ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "data"
    data.mkdir()
    (data / "empty.parquet").write_bytes(b"")
    (data / "junk.parquet").write_bytes(b"not parquet at all")
    settings = _settings(tmp_path)
    report = run_pipeline(_spec("allbad", str(data)), settings, log=lambda m: None)
    assert report.status == "SUCCEEDED" and "nothing ingestible" in report.message, report.message
    assert [s.status for s in report.steps if s.step == "validate"] == ["SKIPPED"]
    store = MetadataStore(settings.metadata_url)
    reasons = {Path(r.uri).name: r.reason for r in _rejected(store, report.run_id)}
    assert reasons["empty.parquet"] == "empty file (0 bytes)"
    assert "cannot be read as parquet" in reasons["junk.parquet"]
    assert len([a for a in store.alerts("allbad") if a.kind == "rejected_source_file"]) == 2
    again = run_pipeline(_spec("allbad", str(data)), settings, log=lambda m: None)
    assert "nothing new to ingest" in again.message and "2 set aside" in again.message


def test_a_corrupt_page_behind_a_good_footer_is_found_and_set_aside(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    """The footer reads fine, so only the Ray read fails: each file is then read in full to
    find the one to blame, and the rest are ingested."""
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=100, seed=6))
    raw = bytearray(Path(files[1].path).read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little")
    raw[4: len(raw) - 8 - footer] = b"\xab" * (len(raw) - 12 - footer)  # every data page
    Path(files[1].path).write_bytes(bytes(raw))
    settings = _settings(tmp_path)
    report = run_pipeline(_spec("pages", str(data)), settings, log=lambda m: None)
    assert report.status == "SUCCEEDED", report.message
    store = MetadataStore(settings.metadata_url)
    assert _ingest_events(store, report.run_id) == ([files[0].path], [files[1].path])
    (rejected,) = _rejected(store, report.run_id)
    assert "cannot be parsed as parquet" in rejected.reason
    assert store.artifacts_of_run(report.run_id, "ingest")[0].properties["rows"] == 100


def _rejection_alerts(store: MetadataStore, pipeline: str) -> list:
    return [a for a in store.alerts(pipeline) if a.kind == "rejected_source_file"]


def _run_ingest(spec: PipelineSpec, settings, run_id: str) -> PlatformError:  # noqa: ANN001
    """The step's own error (a run records only its message, not its exit code)."""
    ctx = StepContext(spec, Services(settings), run_id, "ingest", lambda m: None)
    with pytest.raises(PlatformError) as exc:
        ingest_step.ingest(ctx)
    return exc.value


def test_a_file_the_storage_fails_to_read_is_tried_again_on_the_next_run(
        ray_connected, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Its hash was read, then reading it failed (an S3 503): nothing is known about its
    content, so nothing is remembered; the others are ingested, and it is, once it reads."""
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=100, seed=7))
    flaky = files[1].path
    check = ingest_step.check_ingestible
    monkeypatch.setattr(ingest_step, "check_ingestible",
                        lambda fs, info, fmt: check(FlakyStorage(fs, flaky), info, fmt))
    settings = _settings(tmp_path)
    stop = _run_ingest(_spec("flaky", str(data), on_unreadable="stop"), settings, "flaky-0")
    assert stop.exit_code == 1 and not isinstance(stop, InputError) and "I/O error" in stop.message

    spec = _spec("flaky", str(data))
    first = run_pipeline(spec, settings, run_id="flaky-1", only=["ingest"], log=lambda m: None)
    assert first.status == "SUCCEEDED", first.message
    store = MetadataStore(settings.metadata_url)
    assert _ingest_events(store, "flaky-1") == ([files[0].path], [flaky])
    (rejected,) = _rejected(store, "flaky-1")
    assert rejected.content_hash is None and "I/O error while reading" in rejected.reason
    assert "tried again on the next run" in rejected.reason
    (alert,) = _rejection_alerts(store, "flaky")
    assert alert.severity == "warning" and "tried again on the next run" in alert.message

    monkeypatch.undo()  # the storage reads again
    second = run_pipeline(spec, settings, run_id="flaky-2", only=["ingest"], log=lambda m: None)
    assert second.status == "SUCCEEDED", second.message
    assert _ingest_events(store, "flaky-2") == ([flaky], [])


def test_a_file_set_aside_for_a_type_conflict_is_judged_again_on_the_next_run(
        ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    """Of two disagreeing files the first is kept, and here it is the wrong one: once it is
    fixed, the right one, set aside for disagreeing with it, is ingested."""
    data = tmp_path / "data"
    files = write_demo_data(data, DemoDataConfig(days=2, rows_per_day=100, seed=3))
    right = Path(files[0].path).read_bytes()
    df = pd.read_parquet(files[0].path)
    df["age"] = df["age"].map(lambda v: f"{v:.0f}")
    df.to_parquet(files[0].path, index=False)
    settings = _settings(tmp_path)
    spec = _spec("conflict", str(data))
    first = run_pipeline(spec, settings, run_id="conflict-1", only=["ingest"], log=lambda m: None)
    assert first.status == "SUCCEEDED", first.message
    store = MetadataStore(settings.metadata_url)
    assert _ingest_events(store, "conflict-1") == ([files[0].path], [files[1].path])
    (rejected,) = _rejected(store, "conflict-1")
    assert rejected.content_hash is None and "judged again on the next run" in rejected.reason
    assert [a.severity for a in _rejection_alerts(store, "conflict")] == ["warning"]

    Path(files[0].path).write_bytes(right)  # the wrong file fixed: new content
    second = run_pipeline(spec, settings, run_id="conflict-2", only=["ingest"], log=lambda m: None)
    assert second.status == "SUCCEEDED", second.message
    assert _ingest_events(store, "conflict-2") == ([files[0].path, files[1].path], [])


def test_a_resume_after_a_crash_does_not_alert_twice(ray_connected, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The alerts are raised before the step completes: a crash in between, and a resume
    sets the same files aside again, without alerting again."""
    data = tmp_path / "data"
    files = _mixed_types(data)  # files[0] conflicts (not remembered)
    junk = data / "events_2026-02-01.parquet"
    junk.write_bytes(b"not parquet")  # bad content (remembered)
    settings = _settings(tmp_path)
    spec = _spec("crash", str(data))
    finish = MetadataStore.finish_execution

    def crash(self, exec_id, status, **kw):  # noqa: ANN001, ANN202
        if status == "COMPLETE":
            raise RuntimeError("the driver died")
        return finish(self, exec_id, status, **kw)

    monkeypatch.setattr(MetadataStore, "finish_execution", crash)
    with pytest.raises(RuntimeError, match="the driver died"):
        run_pipeline(spec, settings, run_id="crash-1", only=["ingest"], log=lambda m: None)
    store = MetadataStore(settings.metadata_url)
    alerted = sorted(a.details["file"] for a in _rejection_alerts(store, "crash"))
    assert alerted == sorted([files[0].path, str(junk)])

    monkeypatch.undo()
    resumed = run_pipeline(spec, settings, run_id="crash-1", only=["ingest"], log=lambda m: None)
    assert resumed.status == "SUCCEEDED", resumed.message
    assert set(_ingest_events(store, "crash-1")[1]) == set(alerted)  # set aside again, not alerted again
    assert sorted(a.details["file"] for a in _rejection_alerts(store, "crash")) == alerted


def test_a_failed_ray_read_no_file_is_to_blame_for_is_not_bad_input(
        ray_connected, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Every file reads in full, yet Ray could not write the batch: a cluster fault (exit 1),
    not bad input (exit 2), and nothing is set aside."""
    import ray

    data = tmp_path / "data"
    write_demo_data(data, DemoDataConfig(days=1, rows_per_day=50, seed=8))

    def lost(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("ActorDiedError: the worker died unexpectedly")

    monkeypatch.setattr(ray.data.Dataset, "write_parquet", lost)
    settings = _settings(tmp_path)
    error = _run_ingest(_spec("lost", str(data), placement="cluster"), settings, "lost-1")
    assert error.exit_code == 1 and not isinstance(error, InputError)
    assert "not bad input" in error.message and "worker died" in error.message
    assert _rejection_alerts(MetadataStore(settings.metadata_url), "lost") == []
