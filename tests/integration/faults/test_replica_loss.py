"""A Serve replica dies (SIGKILL) while clients keep sending: the other replica and Serve's
ingress absorb it, Serve starts a replacement by itself, and the figures say how many
requests failed (target: at most 0.1%, of at least 2,000 requests whatever the machine's speed)
and how long until the application was back at full capacity. The demo champion
(tests/integration/conftest.py) is served with two replicas for the test, then put back to one."""

from __future__ import annotations

import threading
import time
from typing import Any

import psutil
import pytest
import requests

from mlplatform.services import Services
from mlplatform.serving.deployer import change
from mlplatform.serving.infra import json_value, sample_rows
from tests import backends
from tests.integration.faults.figures import report

pytestmark = [pytest.mark.ray, pytest.mark.skipif(
    backends.mode() != "cluster", reason="a fault test: runs with `pytest --backends cluster` (.ci/run's "
    "second run, on the multi-node cluster)")]


# The share of failed requests is taken over at least this many. What fails, in 4 of 11 runs: one
# request in flight when the replica dies, answered by HAProxy closing the client's keep-alive
# connection with no response (requests: RemoteDisconnected, ~0.3 s after the kill). That is
# HAProxy's documented answer when a reused server connection closes before any response and it
# cannot replay the request itself: it tells an HTTP/1.1 client the request is safe to retry
# (haproxy/haproxy#1423, #3414). Ray's template offers no `option http-buffer-request`, which
# its L7 retries would need to replay a POST (haproxy/haproxy#2751).
MIN_REQUESTS = 2000


def _replica_pids(temp_dir: str, app: str) -> list[int]:
    from mlplatform.runtime.local import cluster_processes

    pids = []
    for proc in cluster_processes(temp_dir):
        try:
            if " ".join(proc.cmdline()).startswith(f"ray::ServeReplica:{app}:"):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def _running(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())


def _load(url: str, stop: threading.Event, rows: list[dict[str, Any]], out: list[tuple[int, float]],
          errors: list[str]) -> None:
    session = requests.Session()
    i = 0
    while not stop.is_set():
        i += 1
        sent = time.monotonic()
        try:
            code = session.post(url, json={"rows": [rows[i % len(rows)]]}, timeout=30).status_code
        except requests.RequestException as exc:
            code = -1
            errors.append(f"{time.monotonic() - sent:.2f}s {type(exc).__name__}: {exc}"[:300])
        out.append((code, sent))


def test_a_replica_killed_under_load(demo_runs: dict, ray_connected: dict[str, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    settings, spec = demo_runs["settings"], demo_runs["spec"].model_copy(deep=True)
    services = Services(settings)
    champ = services.models.champion("demo")
    assert champ is not None and spec.deploy is not None
    spec.deploy.replicas = 2
    change(services, spec, weights={champ: 100}, champion=champ)
    try:
        deadline = time.monotonic() + 120
        while _running("demo") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _running("demo") == 2
        rows = [{k: json_value(v) for k, v in r.items()}
                for r in sample_rows(services, "demo", champ, 50).to_dict("records")]
        results: list[tuple[int, float]] = []
        stop = threading.Event()
        url = f"{settings.serve_url}/demo/predict"
        errors: list[str] = []
        clients = [threading.Thread(target=_load, args=(url, stop, rows, results, errors)) for _ in range(4)]
        for c in clients:
            c.start()
        try:
            time.sleep(3)
            victims = _replica_pids(ray_connected["temp_dir"], "demo")
            assert len(victims) == 2, victims
            killed_at = time.monotonic()
            psutil.Process(victims[0]).kill()
            back_s = None
            while time.monotonic() - killed_at < 120:
                pids = _replica_pids(ray_connected["temp_dir"], "demo")
                if victims[0] not in pids and _running("demo") == 2 and len(pids) == 2:
                    back_s = time.monotonic() - killed_at
                    break
                time.sleep(0.2)
            # Keep the load on the replacement for a while, and until the share is taken over at
            # least MIN_REQUESTS: at 978 requests (a slow day) one lost request is 0.102%, over
            # the target, where the same loss on a fast day's 2,000 is 0.05%.
            until = time.monotonic() + 3
            while (time.monotonic() < until or len(results) < MIN_REQUESTS) \
                    and time.monotonic() - killed_at < 180:
                time.sleep(0.2)
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=60)
        assert back_s is not None, "Serve did not bring the application back to two replicas"
        failed = [r for r in results if r[0] != 200]
        after = [r for r in results if r[1] > killed_at + back_s]
        share = len(failed) / len(results)
        report(capsys, "serve replica killed under load", requests=len(results), failed=len(failed),
               failed_pct=round(100 * share, 3), full_capacity_back_s=round(back_s, 1),
               codes=sorted({c for c, _ in failed}), errors=errors,
               failed_at_s=[round(t - killed_at, 2) for c, t in failed])
        assert after and all(c == 200 for c, _ in after)  # once back, nothing fails
        assert share <= 0.001, f"{len(failed)} of {len(results)} requests failed"
    finally:
        spec.deploy.replicas = 1
        change(services, spec, weights={champ: 100}, champion=champ)
