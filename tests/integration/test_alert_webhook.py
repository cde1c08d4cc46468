"""The alert webhook against a real local HTTP server: the JSON body, retries on a 5xx, no
retry on a 4xx, an unreachable receiver recorded as a failure, a caller that never waits, and a
short-lived process whose pending notification is still delivered at exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlplatform.metadata.store import Alert
from mlplatform.monitoring import webhook
from mlplatform.monitoring.alerts import list_alerts, raise_alert
from mlplatform.services import Services
from mlplatform.settings import load_settings


@dataclass
class Receiver:
    """A webhook receiver: answers each POST with the next status in `statuses` (then 200),
    optionally holding every request until `release` is set."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def __post_init__(self) -> None:
        self.release.set()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.release.wait(300)
            state.bodies.append(body)
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _services(tmp_path: Path, url: str) -> Services:
    return Services(load_settings(env={"PLATFORM_HOME": str(tmp_path / "home"),
                                       "PLATFORM_ALERT_WEBHOOK": url}))


def _stored(services: Services, alert_id: int) -> Alert:
    [found] = [a for a in list_alerts(services) if a.id == alert_id]
    return found


def _raise(services: Services) -> Alert:
    return raise_alert(services, pipeline="p", source="drift", kind="drift", severity="warning",
                       message="drift on x", run_id="p-1", step="validate", link="/r/validation.html",
                       details={"drifted_share": 0.5})


def test_retried_after_a_500_then_sent(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [500]
    services = _services(tmp_path, receiver.url)
    alert = _raise(services)
    assert webhook.flush(30)
    assert len(receiver.bodies) == 2  # the 500, then the retry
    assert receiver.bodies[0] == receiver.bodies[1]
    body = receiver.bodies[1]
    assert {k: body[k] for k in ("id", "pipeline", "source", "kind", "severity", "message", "run_id",
                                 "step", "link", "details")} == {
        "id": alert.id, "pipeline": "p", "source": "drift", "kind": "drift", "severity": "warning",
        "message": "drift on x", "run_id": "p-1", "step": "validate", "link": "/r/validation.html",
        "details": {"drifted_share": 0.5}}
    assert body["created_at"].startswith(alert.created_at.isoformat()[:19])
    assert _stored(services, alert.id).notified == "sent"


def test_the_caller_never_waits_for_the_receiver(tmp_path: Path, receiver: Receiver,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhook, "TIMEOUT_S", 120.0)  # the held request must not time out meanwhile
    receiver.release.clear()  # the receiver holds the request until the test lets it go
    services = _services(tmp_path, receiver.url)
    alert = _raise(services)  # returns while the receiver still holds the POST
    assert receiver.bodies == []
    assert _stored(services, alert.id).notified is None and webhook.pending() == 1
    receiver.release.set()
    assert webhook.flush(30)
    assert _stored(services, alert.id).notified == "sent" and len(receiver.bodies) == 1


def test_a_4xx_is_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [404]
    services = _services(tmp_path, receiver.url)
    alert = _raise(services)
    assert webhook.flush(30)
    assert len(receiver.bodies) == 1
    assert _stored(services, alert.id).notified == "failed: HTTP 404 Not Found (after 1 attempt)"


def test_an_unreachable_receiver_is_recorded_not_raised(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    services = _services(tmp_path, f"http://user:s3cret@127.0.0.1:{port}/hook")
    alert = _raise(services)
    assert [a.id for a in list_alerts(services)] == [alert.id]  # stored before any attempt
    assert webhook.flush(30)
    assert _stored(services, alert.id).notified == (
        "failed: ConnectionError: [Errno 111] Connection refused (after 3 attempts)")


def test_a_short_lived_process_delivers_at_exit(tmp_path: Path, receiver: Receiver) -> None:
    """A job driver that raises an alert and exits at once: the atexit hook sends it."""
    home = tmp_path / "home"
    code = ("from mlplatform.services import Services\n"
            "from mlplatform.monitoring.alerts import raise_alert\n"
            "a = raise_alert(Services.from_env(), pipeline='p', source='run', kind='run_failed',"
            " severity='critical', message='boom', run_id='p-9', link='run:p-9')\n"
            "print(a.id)\n")
    env = {**os.environ, "PLATFORM_HOME": str(home), "PLATFORM_ALERT_WEBHOOK": receiver.url}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    alert_id = int(done.stdout.strip())
    assert [b["id"] for b in receiver.bodies] == [alert_id] and receiver.bodies[0]["link"] == "run:p-9"
    services = Services(load_settings(env={"PLATFORM_HOME": str(home)}))
    assert _stored(services, alert_id).notified == "sent"


@pytest.mark.ray
def test_a_pipeline_run_goes_on_while_the_receiver_holds_its_alert(
        ray_connected, tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A real run whose ingest sets a truncated file aside: the alert (source ingest, linked to
    the file) is raised through the webhook, and the run finishes while the receiver still
    holds the POST."""
    monkeypatch.setattr(webhook, "TIMEOUT_S", 300.0)  # the held request must not time out meanwhile
    from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
    from mlplatform.pipeline import run_pipeline
    from mlplatform.spec import PipelineSpec

    data = tmp_path / "data"
    good = write_demo_data(data, DemoDataConfig(days=1, rows_per_day=100, seed=4))[0].path
    bad = data / "events_2026-01-05.parquet"
    bad.write_bytes(Path(good).read_bytes()[:200])  # an upload cut off
    spec = PipelineSpec.model_validate({"name": "hooked", "source": {
        "path": str(data), "format": "parquet", "entity_column": "customer_id",
        "timestamp_column": "event_ts", "label_column": "churned"}})
    services = _services(tmp_path, receiver.url)
    receiver.release.clear()
    report = run_pipeline(spec, services.settings, run_id="hooked-1", log=lambda _: None)
    assert report.status == "SUCCEEDED", report.message
    [alert] = list_alerts(services, pipeline="hooked")
    assert (alert.source, alert.kind, alert.link, alert.run_id) == (
        "ingest", "rejected_source_file", str(bad), "hooked-1")
    assert alert.notified is None and receiver.bodies == []  # still held by the receiver
    receiver.release.set()
    assert webhook.flush(30)
    assert [(b["id"], b["source"], b["link"]) for b in receiver.bodies] == [(alert.id, "ingest", str(bad))]
    assert _stored(services, alert.id).notified == "sent"


@pytest.mark.ray
def test_a_submitted_job_sends_its_alert_to_the_submitters_webhook(
        ray_cluster, tmp_path: Path, receiver: Receiver) -> None:  # noqa: ANN001
    """PLATFORM_ALERT_WEBHOOK travels with the job (Settings.job_env): the job driver on the
    cluster raises the alert, delivers it and records "sent" before it exits."""
    from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
    from tests.conftest import platformctl

    data = tmp_path / "data"
    good = write_demo_data(data, DemoDataConfig(days=1, rows_per_day=200, seed=5))[0].path
    bad = data / "events_2026-01-05.parquet"
    bad.write_bytes(Path(good).read_bytes()[:200])
    spec = tmp_path / "hookjob.yaml"
    spec.write_text(f"name: hookjob\nsource:\n  path: {data}\n  entity_column: customer_id\n"
                    "  timestamp_column: event_ts\n  label_column: churned\n")
    done = platformctl("submit", str(spec), "--working-dir", str(tmp_path), "--wait", "--json",
                       env={"PLATFORM_ALERT_WEBHOOK": receiver.url}, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    [body] = receiver.bodies
    assert (body["pipeline"], body["source"], body["run_id"], body["link"]) == (
        "hookjob", "ingest", run_id, str(bad))
    services = Services(load_settings())  # the session's home, which the job used
    assert _stored(services, body["id"]).notified == "sent"
