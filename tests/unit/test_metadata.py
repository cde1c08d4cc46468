import multiprocessing as mp
from pathlib import Path

import sqlalchemy as sa

from mlplatform.metadata.migrate import head
from mlplatform.metadata.store import MetadataStore


def _record(store: MetadataStore, pipeline: str, run: str, status: str,
            inputs: list[str], outputs: list[str]) -> list[int]:
    store.start_run(pipeline, run, {})
    ex = store.start_execution(run, "ingest", {})
    ids = []
    for h in inputs:
        a = store.put_artifact(f"/src/{h}", "source_file", h)
        store.link(ex, a.id, "INPUT")
    for h in outputs:
        a = store.put_artifact(f"/snap/{h}", "dataset_snapshot", h)
        store.link(ex, a.id, "OUTPUT")
        ids.append(a.id)
    store.finish_execution(ex, status, summary={"n": 1})  # type: ignore[arg-type]
    store.finish_run(run, "SUCCEEDED" if status == "COMPLETE" else "FAILED")
    return ids


def test_runs_steps_and_durations(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    _record(store, "p", "r1", "COMPLETE", ["a"], ["s1"])
    _record(store, "p", "r2", "FAILED", ["b"], [])
    runs = store.runs("p")
    assert [r.run_id for r in runs] == ["r2", "r1"]
    assert [r.status for r in runs] == ["FAILED", "SUCCEEDED"]
    detail = store.run("r1")
    assert detail is not None and detail.pipeline == "p"
    assert [(s.step, s.status) for s in detail.steps] == [("ingest", "COMPLETE")]
    assert detail.steps[0].duration_s is not None and detail.steps[0].duration_s >= 0
    assert {(e.type, e.artifact.content_hash) for e in detail.artifacts} == {
        ("INPUT", "a"), ("OUTPUT", "s1")}
    assert store.run("nope") is None and store.runs("nope") == []


def test_consumed_hashes_only_count_completed_steps_of_that_pipeline(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    _record(store, "p", "r1", "COMPLETE", ["a", "b"], ["s1"])
    _record(store, "p", "r2", "FAILED", ["c"], [])
    _record(store, "q", "r3", "COMPLETE", ["d"], ["s2"])
    assert store.consumed_hashes("p", "ingest", "source_file") == {"a", "b"}
    assert store.consumed_hashes("q", "ingest", "source_file") == {"d"}


def test_resume_sees_completed_steps(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.start_run("p", "r", {})
    e1 = store.start_execution("r", "ingest", {})
    store.finish_execution(e1, "COMPLETE")
    e2 = store.start_execution("r", "validate", {})
    store.finish_execution(e2, "FAILED", error="boom")
    assert set(store.completed_steps("r")) == {"ingest"}
    again = store.start_run("p", "r", {})
    assert again.properties["attempts"] == 2 and again.status == "RUNNING"


def test_lineage_up_and_down_across_steps(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    store.start_run("p", "r", {})
    raw = store.put_artifact("/raw", "source_file", "h0")
    snap = store.put_artifact("/snap", "dataset_snapshot", "h1")
    feats = store.put_artifact("/feats", "features", "h2")
    model = store.put_artifact("/model", "model", "h3")
    for step, inp, out in (("ingest", raw, snap), ("featurize", snap, feats),
                           ("train", feats, model)):
        ex = store.start_execution("r", step, {})
        store.link(ex, inp.id, "INPUT")
        store.link(ex, out.id, "OUTPUT")
        store.finish_execution(ex, "COMPLETE")
    up = store.lineage(model.id, "upstream")
    assert [(n.artifact.kind, n.depth, n.via) for n in up] == [
        ("features", 1, "r/train"), ("dataset_snapshot", 2, "r/featurize"),
        ("source_file", 3, "r/ingest")]
    down = store.lineage(raw.id, "downstream")
    assert [n.artifact.kind for n in down] == ["dataset_snapshot", "features", "model"]
    assert store.lineage(raw.id, "upstream") == []


def test_same_artifact_is_registered_once(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'm.db'}")
    a = store.put_artifact("/x", "source_file", "h")
    b = store.put_artifact("/x", "source_file", "h")
    c = store.put_artifact("/x", "source_file", "h2")
    assert a.id == b.id != c.id


def _open_and_write(url: str, n: int, barrier) -> None:  # noqa: ANN001
    barrier.wait()
    store = MetadataStore(url)
    store.start_run("p", f"run-{n}", {"worker": n})
    ex = store.start_execution(f"run-{n}", "ingest", {})
    store.finish_execution(ex, "COMPLETE")


def test_four_processes_create_a_fresh_db_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_and_write, args=(url, i, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = MetadataStore(url)
    assert sorted(r.run_id for r in store.runs("p")) == [f"run-{i}" for i in range(4)]
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head()]
        mode = conn.execute(sa.text("PRAGMA journal_mode")).scalar()
    assert mode == "wal"
