"""Redis and PostgreSQL restart under the platform (`pytest --backends cluster`, where the
session's servers are real ones this test can stop and start):

- while serving: requests that need the online store get a clean 503 with Retry-After while
  Redis is down (within its timeouts, never a hang) and succeed again by themselves once it is
  back; requests with feature rows, and everything through a PostgreSQL restart, keep working;
- while a pipeline runs: the step running when PostgreSQL goes away fails cleanly (the job
  ends with an error naming the metadata store, no traceback) and submitting the run again
  resumes it after its last completed step.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from mlplatform.metadata.store import MetadataStore
from mlplatform.services import Services
from mlplatform.serving.infra import json_value, sample_rows
from tests import backends
from tests.conftest import ROOT, platformctl
from tests.integration.faults.figures import report

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    backends.mode() != "cluster", reason="restarts the session's PostgreSQL and Redis: runs with "
    "`pytest --backends cluster` (.ci/run's second run)")]
DOWN_S = 4.0


def _client(url: str, body: dict[str, Any], kind: str, stop: threading.Event,
            out: list[tuple[str, int, float, float, str]]) -> None:
    session = requests.Session()
    while not stop.is_set():
        sent = time.monotonic()
        try:
            resp = session.post(url, json=body, timeout=60)
            code, text = resp.status_code, resp.text[:300]
            if code == 503:
                assert resp.headers.get("Retry-After"), "a 503 without Retry-After"
        except requests.RequestException as exc:
            code, text = -1, str(exc)
        out.append((kind, code, sent, time.monotonic() - sent, text))
        time.sleep(0.02)


def test_serving_through_redis_and_postgres_restarts(demo_runs: dict,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    active = backends.active()
    assert active is not None
    settings = demo_runs["settings"]
    services = Services(settings)
    champ = services.models.champion("demo")
    run = MetadataStore(settings.metadata_url).run(demo_runs["reports"][-1].run_id)
    summary = {s.step: s.summary for s in run.steps}["training_set"]
    row = {k: json_value(v) for k, v in sample_rows(services, "demo", champ, 1).to_dict("records")[0].items()}
    url = f"{settings.serve_url}/demo/predict"
    entity_body = {"entities": [summary["sample_entity"]], "at": summary["sample_at"]}
    assert requests.post(url, json=entity_body, timeout=30).status_code == 200
    results: list[tuple[str, int, float, float, str]] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_client, args=(url, entity_body, "entity", stop, results)),
               threading.Thread(target=_client, args=(url, {"rows": [row]}, "rows", stop, results))]
    for c in clients:
        c.start()
    try:
        time.sleep(2)
        redis_down = time.monotonic()
        active.redis.restart(DOWN_S)
        redis_up = time.monotonic()
        time.sleep(4)
        pg_down = time.monotonic()
        active.postgres.restart(DOWN_S)
        pg_up = time.monotonic()
        time.sleep(4)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=90)
    codes = {(k, c) for k, c, *_ in results}
    assert codes <= {("entity", 200), ("entity", 503), ("rows", 200)}, \
        [r for r in results if (r[0], r[1]) not in {("entity", 200), ("entity", 503), ("rows", 200)}][:5]
    unavailable = [r for r in results if r[1] == 503]
    assert unavailable and all("online_store_url" in r[4] for r in unavailable)
    # Refused only while Redis was away (allowing for the requests in flight when it went).
    assert all(redis_down - 1 <= r[2] <= redis_up + 1 for r in unavailable)
    after = [r for r in results if r[0] == "entity" and r[2] > redis_up + 1]
    assert after and all(r[1] == 200 for r in after)  # recovered by itself
    recovered = min(r[2] + r[3] for r in results if r[0] == "entity" and r[1] == 200 and r[2] >= redis_down)
    assert max(r[3] for r in results) < 15  # no hang: Redis' timeouts bound every request
    during_pg = [r for r in results if pg_down <= r[2] <= pg_up]
    assert during_pg and all(r[1] == 200 for r in during_pg)
    report(capsys, "Redis and PostgreSQL restarted while serving", requests=len(results),
           redis_down_s=round(redis_up - redis_down, 1), answered_503=len(unavailable),
           back_after_redis_s=round(recovered - redis_up, 2), pg_down_s=round(pg_up - pg_down, 1),
           failed_during_pg=sum(r[1] != 200 for r in during_pg),
           max_latency_s=round(max(r[3] for r in results), 2))


STEPS = ["ingest", "validate", "featurize", "training_set", "train", "evaluate", "register"]


def _job_status(dashboard: str, job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(dashboard).get_job_status(job_id))


def test_a_postgres_restart_fails_the_running_step_cleanly_and_the_run_resumes(
        ray_cluster: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    active = backends.active()
    assert active is not None
    home = tmp_path / "home"
    env = {"PLATFORM_HOME": str(home), "PLATFORM_RAY_ADDRESS": ray_cluster["dashboard_url"],
           **backends.store_env(home, "pgrestart")}
    data, folder = tmp_path / "data", tmp_path / "spec"
    write_demo_data(data, DemoDataConfig(days=1, rows_per_day=400, seed=8))
    folder.mkdir()
    spec = folder / "pipeline.yaml"
    spec.write_text((ROOT / "jobs/examples/demo.yaml").read_text()
                    .replace("name: demo\n", "name: pgrestart\n")
                    .replace("${PLATFORM_HOME}/demo/data", str(data)))
    steps = [a for s in STEPS for a in ("--step", s)]
    first = platformctl("submit", str(spec), *steps, "--json", env=env, cwd=folder)
    assert first.returncode == 0, first.stdout + first.stderr
    sub = json.loads(first.stdout)
    from mlplatform.settings import load_settings

    store = MetadataStore(load_settings(env={**os.environ, **env}).metadata_url)
    deadline, restarted = time.monotonic() + 240, None
    while time.monotonic() < deadline:
        detail = store.run(sub["run_id"])
        if detail and any(e.step == "featurize" and e.status == "RUNNING" for e in detail.steps):
            restarted = time.monotonic()
            active.postgres.restart(12.0)  # longer than the step: its end meets the database away
            break
        time.sleep(0.2)
    assert restarted is not None, "the run never reached featurize"
    deadline = time.monotonic() + 300
    while _job_status(ray_cluster["dashboard_url"], sub["job_id"]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "the job hung after the database restart"
        time.sleep(1)
    status = _job_status(ray_cluster["dashboard_url"], sub["job_id"])
    logs = platformctl("jobs", "logs", sub["job_id"], env=env).stdout
    if status == "FAILED":  # the step that met the restart failed cleanly, naming the store
        assert "metadata_url" in logs and "Traceback" not in logs, logs[-3000:]
    completed = sorted(store.completed_steps(sub["run_id"]))
    again = platformctl("submit", str(spec), *steps, "--run-id", sub["run_id"], "--wait", "--json",
                        env=env, cwd=folder)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    detail = store.run(sub["run_id"])
    assert detail is not None and detail.status == "SUCCEEDED"
    for step in completed:  # resumed after its last completed step: those ran once
        assert [e.status for e in detail.steps if e.step == step] == ["COMPLETE"], step
    report(capsys, "PostgreSQL restarted during a pipeline run", first_attempt=status,
           steps_completed_before=len(completed), resumed="SUCCEEDED")
