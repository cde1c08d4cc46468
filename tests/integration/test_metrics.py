"""The platform's metrics on the session's real Ray metrics endpoint.

What records them is real: the demo runs' pipeline hooks (tests/integration/conftest.py),
a separate driver process that records live-drift and quality values and a run and exits at
once (as a job's driver does), and the Serve replica answering real HTTP requests, good and
bad. The endpoints are the ones Ray lists in its Prometheus service-discovery file; they are
polled until Ray's agents have exported the values (every ~10 s), with a deadline, never a
timing assertion. The independent truths: the run reports and the step summaries in the
metadata store, and the answers the HTTP requests got.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from mlplatform.metadata.schema import ExecutionRow
from mlplatform.monitoring.metrics import METRIC_NAMES
from mlplatform.services import Services
from mlplatform.serving.infra import json_value, sample_rows
from mlplatform.serving.plan import VERSION_HEADER
from tests.conftest import ROOT
from tests.unit.test_grafana_dashboard import RAY_OWN_METRICS

pytestmark = pytest.mark.ray

DEADLINE_S = 90.0  # several of Ray's export intervals (~10 s) on a busy 2-core machine
GAUGE_AGE_S = 60.0  # twice the age at which Ray 2.60 dropped a gauge set once
Sample = tuple[str, dict[str, str], float]

DRIVER = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="WARNING")
from mlplatform.monitoring import metrics
metrics.set_live_drift("demo", "7", "tenure", 0.42, True)
metrics.set_live_drift("demo", "7", "plan", 0.01, False)
metrics.set_live_quality("demo", "7", "champion", "roc_auc", 0.81, estimated=False)
metrics.set_live_quality("demo", "7", "champion", "roc_auc", 0.79, estimated=True)
metrics.record_run("demo", "metrics_probe", "FAILED")
print("recorded", flush=True)
"""  # exits right away: the values must survive the driver


def discovery_file(temp_dir: str) -> Path:
    return Path(temp_dir) / "prom_metrics_service_discovery.json"


def scrape(temp_dir: str) -> list[Sample]:
    """Every sample of every node's metrics endpoint listed in Ray's service-discovery file."""
    groups = json.loads(discovery_file(temp_dir).read_text())
    out: list[Sample] = []
    for target in [t for g in groups for t in g["targets"]]:
        text = requests.get(f"http://{target}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            out.extend((s.name, dict(s.labels), float(s.value)) for s in family.samples)
    return out


def total(samples: list[Sample], name: str, **tags: str) -> float:
    return sum(v for n, labels, v in samples
               if n == name and all(labels.get(k) == want for k, want in tags.items()))


def has(samples: list[Sample], name: str, **tags: str) -> bool:
    return any(n == name and all(labels.get(k) == want for k, want in tags.items())
               for n, labels, _ in samples)


def poll(temp_dir: str, checks: dict[str, Callable[[list[Sample]], bool]]) -> list[Sample]:
    """Scrape until every check holds or the deadline passes; fail naming what never held."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        samples = scrape(temp_dir)
        missing = [what for what, check in checks.items() if not check(samples)]
        if not missing:
            return samples
        if time.monotonic() > deadline:
            ours = sorted({n for n, _, _ in samples if "mlplatform" in n})
            pytest.fail(f"not on the metrics endpoint after {DEADLINE_S:.0f}s: {missing}; "
                        f"platform series found: {ours}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def traffic(demo_runs: dict) -> dict[str, Any]:
    """Real HTTP requests to the served champion: 5 good ones of 4 rows, a malformed body, a
    request for a version that is not live. Returns what the answers said."""
    settings = demo_runs["settings"]
    services = Services(settings)
    champion = services.models.champion("demo")
    assert champion is not None
    url = f"{settings.serve_url}/demo/predict"
    rows = [{k: json_value(v) for k, v in r.items()}
            for r in sample_rows(services, "demo", champion, 20).to_dict("records")]
    predicted: list[Any] = []
    for i in range(5):
        answer = requests.post(url, json={"rows": rows[4 * i:4 * i + 4]}, timeout=30)
        assert answer.status_code == 200, answer.text
        predicted += [p["prediction"] for p in answer.json()["predictions"]]
    bad = requests.post(url, data=b"{not json", headers={"content-type": "application/json"}, timeout=30)
    assert bad.status_code == 400
    unknown = requests.post(url, json={"rows": rows[:1]}, headers={VERSION_HEADER: "999"}, timeout=30)
    assert unknown.status_code == 404
    return {"champion": champion, "predicted": predicted}


def test_pipeline_driver_and_serving_metrics_reach_the_endpoint(
        ray_connected: dict[str, str], demo_runs: dict, traffic: dict[str, Any]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)])}
    driver = subprocess.run([sys.executable, "-c", DRIVER, ray_connected["gcs_address"]], env=env,
                            capture_output=True, text=True, timeout=180)
    assert driver.returncode == 0 and "recorded" in driver.stdout, driver.stderr[-2000:]
    driver_exited = time.monotonic()

    # The truth for the pipeline metrics: the runs' reports and the validate steps' summaries.
    steps: dict[tuple[str, str], int] = {}
    runs: dict[str, int] = {}
    for report in demo_runs["reports"]:
        runs[report.status] = runs.get(report.status, 0) + 1
        for s in report.steps:
            if s.status in ("COMPLETE", "FAILED"):
                steps[(s.step, s.status)] = steps.get((s.step, s.status), 0) + 1
    with Services(demo_runs["settings"]).metadata.session() as db:
        validate = select(ExecutionRow).where(ExecutionRow.step == "validate")
        summaries = [r.summary for r in db.scalars(validate)]
    rows_in = sum(s["rows_in"] for s in summaries if s and "rows_in" in s)
    quarantined = sum(s["rows_quarantined"] for s in summaries if s and "rows_in" in s)
    assert rows_in > 0

    champion, demo = traffic["champion"], {"pipeline": "demo"}
    served = {**demo, "version": champion, "variant": "champion"}
    classes = {str(c) for c in traffic["predicted"]}
    checks: dict[str, Callable[[list[Sample]], bool]] = {
        # pipeline hooks (the demo runs, in this process)
        **{f"step {st} {status} x{n}": (lambda s, st=st, status=status, n=n: total(
            s, "ray_mlplatform_steps_total", **demo, step=st, status=status) >= n)
           for (st, status), n in steps.items()},
        **{f"step duration {st} {status} x{n}": (lambda s, st=st, status=status, n=n: total(
            s, "ray_mlplatform_step_duration_seconds_count", **demo, step=st, status=status) >= n)
           for (st, status), n in steps.items()},
        "rows in": lambda s: total(s, "ray_mlplatform_rows_total", **demo, kind="in") >= rows_in,
        # a counter cannot be increased by 0: no quarantined series until a row is quarantined
        "rows quarantined": lambda s: total(s, "ray_mlplatform_rows_total", **demo,
                                            kind="quarantined") >= quarantined,
        "rows valid": lambda s: total(s, "ray_mlplatform_rows_total", **demo, kind="valid")
        >= rows_in - quarantined,
        "last batch": lambda s: has(s, "ray_mlplatform_batch_rows", **demo, kind="in"),
        **{f"runs {status} x{n}": (lambda s, status=status, n=n: total(
            s, "ray_mlplatform_runs_total", **demo, cause="manual", status=status) >= n)
           for status, n in runs.items()},
        # the driver that exited
        "run of the exited driver": lambda s: total(s, "ray_mlplatform_runs_total", **demo,
                                                    cause="metrics_probe", status="FAILED") >= 1,
        "live drift": lambda s: total(s, "ray_mlplatform_live_drift_score", **demo, version="7",
                                      feature="tenure") == 0.42
        and total(s, "ray_mlplatform_live_drift_detected", **demo, version="7", feature="tenure") == 1.0
        and total(s, "ray_mlplatform_live_drift_detected", **demo, version="7", feature="plan") == 0.0
        and has(s, "ray_mlplatform_live_drift_detected", **demo, version="7", feature="plan"),
        # version "7" is the probe's: other tests of the session record the demo's real versions
        "live quality": lambda s: total(s, "ray_mlplatform_live_quality", **demo, version="7",
                                        variant="champion", metric="roc_auc", kind="realised") == 0.81
        and total(s, "ray_mlplatform_live_quality", **demo, version="7", metric="roc_auc",
                  kind="estimated") == 0.79,
        # the Serve replica
        "requests ok": lambda s: total(s, "ray_mlplatform_serve_requests_total", **served,
                                       outcome="ok") >= 5,
        "replica tags": lambda s: has(s, "ray_mlplatform_serve_requests_total", **served,
                                      application="demo", deployment="ingress"),
        "bad request": lambda s: total(s, "ray_mlplatform_serve_errors_total", **demo,
                                       kind="bad_request") >= 1,
        "unknown version": lambda s: total(s, "ray_mlplatform_serve_errors_total", **demo,
                                           kind="not_found") >= 1,
        "latency": lambda s: total(s, "ray_mlplatform_serve_latency_ms_count", **served) >= 5
        and has(s, "ray_mlplatform_serve_latency_ms_bucket", **served, le="+Inf"),
        "rows predicted": lambda s: total(s, "ray_mlplatform_serve_predictions_total", **served) >= 20,
        "scores": lambda s: total(s, "ray_mlplatform_serve_score_count", **served) >= 20,
        "classes": lambda s: classes <= {lab.get("class") for n, lab, _ in s
                                         if n == "ray_mlplatform_serve_class_total"
                                         and lab.get("version") == champion},
    }
    samples = poll(ray_connected["temp_dir"], checks)
    _PROBE.update(exited=driver_exited, checks=checks)

    # Every exported name the dashboard may use is real (the regression histogram needs a
    # regressor: the demo serves a classifier), and so is every Ray metric it names.
    names = {n for n, _, _ in samples}
    regression = {n for n in METRIC_NAMES if "prediction_value" in n}
    assert set(METRIC_NAMES) - regression <= names, sorted(set(METRIC_NAMES) - regression - names)
    assert set(RAY_OWN_METRICS) <= names, sorted(set(RAY_OWN_METRICS) - names)


# The probe driver's exit time and the checks of its values, for the late test below.
_PROBE: dict[str, Any] = {}


@pytest.mark.late
def test_the_exited_drivers_gauges_outlive_rays_drop_age(ray_connected: dict[str, str]) -> None:
    """Ray drops a gauge from the endpoint ~20-30 s after it was last set; the sink sets its
    gauges again, so the exited driver's values are still there GAUGE_AGE_S after it exited.
    Marked `late` (tests/conftest.py runs it after every other test): the session's other
    tests fill the wait instead of a sleep of a minute."""
    if "exited" not in _PROBE:
        pytest.fail("the probe driver's test did not record its values: run "
                    "test_pipeline_driver_and_serving_metrics_reach_the_endpoint with this one")
    time.sleep(max(0.0, _PROBE["exited"] + GAUGE_AGE_S - time.monotonic()))
    later = scrape(ray_connected["temp_dir"])
    checks = _PROBE["checks"]
    assert checks["live drift"](later) and checks["live quality"](later) and checks["last batch"](later)


def test_a_real_prometheus_scrapes_ray_with_the_platform_config(
        ray_connected: dict[str, str], demo_runs: dict, tmp_path: Path) -> None:
    """cluster/prometheus/prometheus.yml, its discovery file pointed at the session cluster's."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus)")
    from mlplatform.runtime.local import free_port

    config = (ROOT / "cluster" / "prometheus" / "prometheus.yml").read_text()
    assert "/tmp/ray/prom_metrics_service_discovery.json" in config
    config = config.replace("/tmp/ray/prom_metrics_service_discovery.json",
                            str(discovery_file(ray_connected["temp_dir"])))
    config = config.replace("scrape_interval: 15s", "scrape_interval: 2s")
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    query = 'sum by (pipeline, status) (ray_mlplatform_runs_total{pipeline="demo"})'
    try:
        deadline, result = time.monotonic() + DEADLINE_S, []
        while time.monotonic() < deadline and not result:
            time.sleep(1.0)
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query},
                                      timeout=5).json()
            except requests.ConnectionError:
                continue
            result = answer["data"]["result"]
        assert result, (tmp_path / "prometheus.log").read_text()[-3000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    runs = {r["metric"]["status"]: float(r["value"][1]) for r in result}
    succeeded = sum(1 for r in demo_runs["reports"] if r.status == "SUCCEEDED")
    assert runs.get("SUCCEEDED", 0) >= succeeded
