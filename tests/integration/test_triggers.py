"""Triggers on the real local Ray: runs submitted as Ray Jobs by watchers, on a home of their own.

The demo pipeline with small batches (no serving); runs stop after the steps each test needs
(ingest, validate, featurize; a retraining run: training_set), so a test proves what started
which run, and why, without training models. The truth checked is independent of the
watcher: the runs the metadata store holds (their cause, what their ingest read), the content
hashes of the files written, the jobs' ends on the cluster.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mlplatform.artifacts import SourceFile, ValidatedBatch
from mlplatform.data.synthetic import DemoDataConfig, write_day
from mlplatform.runtime.jobs import JobsClient
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings
from mlplatform.spec_loader import load_spec
from mlplatform.triggers import claims
from mlplatform.triggers.retrain import ADOPT_STEP
from mlplatform.triggers.watcher import Watcher
from tests.backends import store_env

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["ingest", "validate", "featurize", "training_set"]  # a retraining run: training_set only
CFG = DemoDataConfig(days=3, rows_per_day=1000, entities=300, drift_day=3)


def _spec_text(src: Path, name: str, triggers: dict) -> str:
    data = yaml.safe_load((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
    data.update(name=name, triggers=triggers)
    data["source"]["path"] = str(src)
    data.pop("deploy")
    data["evaluation"].pop("slices")
    data["model"]["search"]["num_samples"] = 1
    # Against the previous batch, the drifted third day stands out from the second.
    data["validation"]["drift"] = {"reference": "previous_batch"}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def home(ray_connected: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("triggers")
    env = {"PLATFORM_HOME": str(root / "home"), "PLATFORM_RAY_ADDRESS": ray_connected["dashboard_url"],
           **{k: os.environ[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "PLATFORM_SERVE_PORT")},
           **store_env(root / "home", "triggers")}
    work = root / "work"
    work.mkdir()
    spec_file = work / "trig.yaml"
    spec_file.write_text(_spec_text(root / "src", "trig", {"new_data": {"poll": "1s"}}))
    return {"root": root, "env": env, "settings": load_settings(env=env), "work": work,
            "spec_file": spec_file, "src": root / "src", "gcs": ray_connected["gcs_address"]}


def _watcher(home: dict, name: str, spec_file: Path | None = None) -> Watcher:
    spec_file = spec_file or home["spec_file"]
    spec = load_spec(spec_file, env=home["env"])
    return Watcher(spec, home["settings"], spec_file, name=name, working_dir=home["work"],
                   only_steps=STEPS)


def _watch_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The commands in a process of their own that exits, as `platformctl watch` would run
    (tests.conftest.platformctl, once app.py registers them)."""
    full = {k: v for k, v in {**os.environ, **env}.items() if k != "_PLATFORM_APPLIED_RAY_AUTH_MODE"}
    return subprocess.run([sys.executable, "-c", "from mlplatform.cli.watch_cmd import app; app()", *args],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def _wait(settings: Settings, job_id: str) -> str:
    return JobsClient(settings).wait(job_id, timeout_s=600).status


def _runs(settings: Settings, pipeline: str) -> list:
    return sorted(Services(settings).metadata.runs(pipeline), key=lambda r: r.created_at)


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_each_new_batch_runs_once_under_two_watchers(home: dict) -> None:
    settings = home["settings"]
    w1, w2 = _watcher(home, "w1"), _watcher(home, "w2")
    now = dt.datetime.now(dt.UTC)
    days = [write_day(home["src"], CFG, 1)]
    first = w1.tick(now)
    assert [(o.trigger, o.status) for o in first.outcomes] == [("new_data", "submitted")]
    assert w2.tick(now).outcomes == []  # the batch is claimed: the second watcher does nothing
    assert _wait(settings, first.outcomes[0].job_id or "") == "SUCCEEDED"
    days.append(write_day(home["src"], CFG, 2))
    second = w2.tick(now + dt.timedelta(seconds=4))  # the run ended: its claim goes, day 2 fires
    assert second.released == [first.outcomes[0].run_id]
    assert [(o.trigger, o.status) for o in second.outcomes] == [("new_data", "submitted")]
    assert w1.tick(now + dt.timedelta(seconds=6)).outcomes == []
    assert _wait(settings, second.outcomes[0].job_id or "") == "SUCCEEDED"
    for w in (w1, w2):
        assert w.tick(now + dt.timedelta(seconds=8)).outcomes == []

    runs = _runs(settings, "trig")
    assert [r.run_id for r in runs] == [first.outcomes[0].run_id, second.outcomes[0].run_id]
    assert [r.properties["cause"] for r in runs] == ["new_data", "new_data"]
    assert [r.status for r in runs] == ["SUCCEEDED", "SUCCEEDED"]
    store = Services(settings).metadata
    ingested = [[a.content_hash for a in store.artifacts_of_run(r.run_id, "ingest", "INPUT")
                 if a.kind == SourceFile.kind] for r in runs]
    assert ingested == [[_sha(days[0].path)], [_sha(days[1].path)]]  # one run per batch, in order
    assert "events_2026-01-02.parquet" in runs[1].properties["cause_detail"]


def test_a_drifted_batch_starts_one_retraining_run_on_the_validated_data(home: dict) -> None:
    settings = home["settings"]
    spec_file = home["work"] / "drift.yaml"
    # Three of the demo's features drift on day 3; a share of 0.2 of them is enough here.
    spec_file.write_text(_spec_text(home["src"], "trig", {"new_data": {"poll": "1s"},
                                                          "drift": {"on": ["batch"], "threshold": 0.2}}))
    w = _watcher(home, "w3", spec_file)
    now = dt.datetime.now(dt.UTC)
    drifted = write_day(home["src"], CFG, 3)
    assert drifted.drifted
    first = w.tick(now).outcomes
    ingest = [o for o in first if o.trigger == "new_data"]
    assert [o.status for o in ingest] == ["submitted"]
    # Day 2's batch (validated, never trained on) may count as drifted too: not while a run is active.
    assert all(o.status == "skipped" and "a run is active" in o.reason for o in first if o.trigger == "drift")
    assert _wait(settings, ingest[0].job_id or "") == "SUCCEEDED"
    fired = w.tick(now + dt.timedelta(seconds=2))
    assert [(o.trigger, o.status) for o in fired.outcomes] == [("drift", "submitted")]
    assert _wait(settings, fired.outcomes[0].job_id or "") == "SUCCEEDED"
    assert w.tick(now + dt.timedelta(seconds=4)).outcomes == []  # that drift is acted on: not again

    run = Services(settings).metadata.run(fired.outcomes[0].run_id or "")
    assert run is not None and run.properties["cause"] == "drift"
    assert ingest[0].run_id in run.properties["cause_detail"] and "drifted" in run.properties["cause_detail"]
    store = Services(settings).metadata
    steps = {e.step: e.status for e in run.steps}
    assert steps == {ADOPT_STEP: "COMPLETE", "training_set": "COMPLETE"}
    adopted = store.run_outputs(run.run_id, ValidatedBatch)
    validated = store.run_outputs(ingest[0].run_id or "", ValidatedBatch)
    assert [a.id for a in adopted] == [a.id for a in validated]  # the drifted day's batch
    used = store.artifacts_of_run(run.run_id, "training_set", "INPUT")
    assert len([a for a in used if a.kind == ValidatedBatch.kind]) == 3  # all three days, not one


def test_a_schedule_fires_at_its_time(home: dict) -> None:
    """The clock is the test's: nothing fires before 03:00 UTC, one retraining run after."""
    spec_file = home["work"] / "sched.yaml"
    spec_file.write_text(_spec_text(home["src"], "trig", {"schedule": {"cron": "0 3 * * *"}}))
    w = _watcher(home, "w4", spec_file)
    t0 = dt.datetime(2026, 12, 7, 1, 30)
    assert w.tick(t0).outcomes == []
    assert w.tick(t0 + dt.timedelta(minutes=89)).outcomes == []  # 02:59
    fired = w.tick(t0 + dt.timedelta(minutes=90, seconds=1)).outcomes
    assert [(o.trigger, o.status) for o in fired] == [("schedule", "submitted")]
    assert w.tick(t0 + dt.timedelta(minutes=95)).outcomes == []  # 03:00 is spent
    assert _wait(home["settings"], fired[0].job_id or "") == "SUCCEEDED"
    run = Services(home["settings"]).metadata.run(fired[0].run_id or "")
    assert run is not None and run.status == "SUCCEEDED" and run.properties["cause"] == "schedule"
    assert "2026-12-07T03:00:00" in run.properties["cause_detail"]

    from mlplatform.cli.watch_cmd import app

    result = CliRunner().invoke(app, ["triggers", "trig", "--json"], env=home["env"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    fires = [(f["trigger"], f["status"]) for f in shown["fires"] if f["status"] == "submitted"]
    assert fires == [("schedule", "submitted"), ("drift", "submitted"), ("new_data", "submitted"),
                     ("new_data", "submitted"), ("new_data", "submitted")]
    assert shown["fires"][0]["run_id"] == run.run_id and shown["fires"][0]["job_id"] == fired[0].job_id


def test_watch_starts_a_detached_watcher_that_outlives_the_cli(home: dict) -> None:
    import ray

    spec_file = home["work"] / "actor.yaml"
    spec_file.write_text(_spec_text(home["src"], "trig-actor", {"schedule": {"cron": "0 0 1 1 *"}}))
    env = {**home["env"], "RAY_ADDRESS": home["gcs"]}
    started = _watch_cli("watch", str(spec_file), "--json", env=env, cwd=home["work"])
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["started"] is True
    # The CLI's process has exited; the actor lives on the cluster.
    actor = ray.get_actor("watcher:trig-actor", namespace="mlplatform")
    info = ray.get(actor.info.remote(), timeout=60)
    assert info["pipeline"] == "trig-actor" and info["alive"]
    for _ in range(60):  # its loop ticks by itself (the first tick starts the schedule's count)
        if claims.read_state(Services(home["settings"]).metadata, "trig-actor", "schedule").revision:
            break
        time.sleep(1)
    assert claims.read_state(Services(home["settings"]).metadata, "trig-actor", "schedule").revision == 1
    again = _watch_cli("watch", str(spec_file), env=env, cwd=home["work"])
    assert again.returncode == 0 and "already running" in again.stdout
    stopped = _watch_cli("watch", "--stop", "trig-actor", "--json", env=env, cwd=home["work"])
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout) == {"pipeline": "trig-actor", "stopped": True}
    for _ in range(30):
        try:
            ray.get_actor("watcher:trig-actor", namespace="mlplatform")
        except ValueError:
            break
        time.sleep(1)
    with pytest.raises(ValueError):
        ray.get_actor("watcher:trig-actor", namespace="mlplatform")
    gone = _watch_cli("watch", "--stop", "trig-actor", env=env, cwd=home["work"])
    assert gone.returncode == 0 and "no watcher" in gone.stdout


def test_drifted_served_traffic_starts_a_retraining_run_whose_cause_says_so(
        demo_runs: dict, tmp_path: Path) -> None:
    """The demo's served champion gets drifted traffic; the watcher's live-drift check (the
    monitoring module's report over the prediction log) raises the alert and starts a
    retraining run (training_set only: the shared demo's champion stays as it is)."""
    import math

    from mlplatform.monitoring.alerts import list_alerts
    from tests.integration.test_live_drift import _now, _post, _traffic

    settings = demo_runs["settings"]
    services = Services(settings)
    champion = services.models.champion("demo")
    live = {"services": services, "champion": champion, "url": f"{settings.serve_url}/demo",
            "storage": settings.storage_uri}
    work = tmp_path / "work"
    work.mkdir()
    spec_file = work / "demo.yaml"
    spec_file.write_text((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
    from mlplatform.spec import DriftTrigger, TriggersSpec

    spec = demo_runs["spec"].model_copy(deep=True)
    # 2 or 3 of the demo's 13 raw features drift (device's small shift sits at the threshold): at a
    # dataset share of 0.15 that is dataset drift (the alert), and the trigger's threshold (null)
    # is that share.
    spec.validation.drift.dataset_drift_share = 0.15
    spec.triggers = TriggersSpec(drift=DriftTrigger(on=["live"]))
    w = Watcher(spec, settings, spec_file, name="w-live", working_dir=work, only_steps=["training_set"])
    start = _now()
    _post(live, _traffic(live, day=5, drift=True))
    end = _now()
    w.spec.monitoring.window = f"{math.ceil((end - start).total_seconds()) + 1}s"
    fired = w.tick(end + dt.timedelta(milliseconds=1))
    assert [(o.trigger, o.status) for o in fired.outcomes] == [("live_drift", "submitted")], fired
    assert _wait(settings, fired.outcomes[0].job_id or "") == "SUCCEEDED"
    alerts = list_alerts(services, pipeline="demo", source="live_drift", since=start)
    assert len(alerts) == 1 and "income" in alerts[0].message
    run = services.metadata.run(fired.outcomes[0].run_id or "")
    assert run is not None and run.properties["cause"] == "live_drift"
    assert all(f in run.properties["cause_detail"] for f in ("income", "days_since_last_login"))
    assert {e.step: e.status for e in run.steps} == {ADOPT_STEP: "COMPLETE", "training_set": "COMPLETE"}
    assert services.models.champion("demo") == champion
    # Within the monitoring interval the check does not run again: no second run, no second alert.
    assert w.tick(end + dt.timedelta(seconds=2)).outcomes == []
