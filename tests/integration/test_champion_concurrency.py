"""Many processes against one fresh home (metadata and MLflow both on SQLite, neither
created yet): opening it at once all succeed (MLflow's first open migrates its database,
which raced before), and promoting at once leaves one champion, a history of every change
in order and MLflow's alias agreeing with the record. Real processes (a fork server's), real
SQLite and MLflow; no Ray."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from mlplatform.metadata.champion import ChampionConflict
from mlplatform.models.registry import CHAMPION
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings

N = 8
PIPELINE = "p"


def home_settings(home: Path) -> Settings:
    return load_settings(env={"PLATFORM_HOME": str(home)})


def _run_all(target, args_of, barriers: int = 1) -> list[int | None]:  # noqa: ANN001
    """N processes running target(*args_of(i), *barriers); their exit codes.

    Forked from a fork server that imported this module and MLflow's SQL store once (no
    threads, unlike this pytest process): each process still opens its own engines, files
    and MLflow client, but skips the 2 s of imports a spawned one pays, 8 times over."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "mlflow", "mlflow.store.tracking.sqlalchemy_store",
                                "mlflow.store.model_registry.sqlalchemy_store"])
    shared = [ctx.Barrier(N) for _ in range(barriers)]
    procs = [ctx.Process(target=target, args=(*args_of(i), *shared)) for i in range(N)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    for p in procs:
        if p.is_alive():
            p.kill()
    return [p.exitcode for p in procs]


def _open_home(home: str, i: int, barrier) -> None:  # noqa: ANN001
    services = Services(home_settings(Path(home)))
    barrier.wait()
    services.metadata.start_run(PIPELINE, f"run-{i}", {"worker": i})
    reg = services.models  # MLflow's first open of the fresh tracking database
    run = reg.start_run(PIPELINE, f"worker-{i}", {"worker": str(i)})
    reg.log(run, metrics={"worker": i})
    reg.end_run(run)


def test_processes_open_one_fresh_home_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _run_all(_open_home, lambda i: (str(home), i)) == [0] * N
    services = Services(home_settings(home))
    assert sorted(r.run_id for r in services.metadata.runs(PIPELINE)) == sorted(f"run-{i}" for i in range(N))
    reg = services.models
    runs = reg.client.search_runs([reg.experiment_id(PIPELINE)])
    assert sorted(r.data.metrics["worker"] for r in runs) == list(range(N))


def _register_and_promote(home: str, i: int, out: str, opened, read) -> None:  # noqa: ANN001
    opened.wait()
    services = Services(home_settings(Path(home)))  # both databases fresh: created here, at once
    reg = services.models
    run = reg.start_run(PIPELINE, f"worker-{i}", {})
    reg.client.log_text(run, f"model {i}", "model/model.txt")  # what a version points at; never loaded
    reg.end_run(run)
    version, _ = reg.register("m", run, tags={"worker": str(i)})
    expected = reg.champion("m")
    read.wait()  # every process has read the champion (none yet): they all race for the first change
    conflicts = 0
    while True:  # a client that wants its version champion: compare-and-set, re-read, retry
        try:
            change = reg.set_champion("m", version, expected=expected, action="manual", reason=f"worker {i}")
            assert change.from_version == expected and change.written  # from what it read, or not at all
            break
        except ChampionConflict as exc:
            assert exc.actual != expected
            conflicts += 1
            assert conflicts < 100
            expected = reg.champion("m")
    Path(out, f"{i}.json").write_text(json.dumps({"version": version, "change": change.id,
                                                  "conflicts": conflicts}))


def test_processes_promoting_at_once_leave_one_champion_and_every_change(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    out.mkdir()
    assert _run_all(_register_and_promote, lambda i: (str(home), i, str(out)), barriers=2) == [0] * N
    results = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    services = Services(home_settings(home))
    reg, store = services.models, services.metadata
    # All read "no champion" before any change: one won that race, the others were refused
    # (at least once each) and retried from what they read next.
    assert sum(r["conflicts"] for r in results) >= N - 1
    assert sorted(r["conflicts"] == 0 for r in results) == [False] * (N - 1) + [True]
    [winner] = [r for r in results if r["conflicts"] == 0]
    # One version per process, each registered once.
    assert sorted(int(r["version"]) for r in results) == list(range(1, N + 1))
    assert [v.version for v in reg.versions("m")] == [str(v) for v in range(1, N + 1)]
    # Every promotion is one change in the history, and the history is a chain.
    history = store.champion_history("m")
    assert len(history) == N
    assert history[0].from_version is None and history[0].to_version == winner["version"]
    for before, after in zip(history, history[1:], strict=False):
        assert after.from_version == before.to_version and after.id > before.id
    assert {h.to_version for h in history} == {r["version"] for r in results}
    by_id = {h.id: h for h in history}
    assert all(by_id[r["change"]].to_version == r["version"] for r in results)
    # Exactly one champion: the last change's, and MLflow's alias says the same.
    record = store.champion("m")
    assert record is not None and record.version == history[-1].to_version
    assert reg.alias("m", CHAMPION) == record.version
    assert [v.version for v in reg.versions("m") if CHAMPION in v.aliases] == [record.version]
