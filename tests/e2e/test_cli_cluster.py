"""platformctl end to end, as real subprocesses against the session's real cluster. The
commands that only read what a run left (runs, models, jobs) run in this process (`cli`): how
the console script starts is tested by the others."""

import json
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import requests

from mlplatform.data.synthetic import DemoDataConfig, write_demo_data
from tests.conftest import ROOT, cli, platformctl

pytestmark = pytest.mark.ray
DEMO = "jobs/examples/demo.yaml"
# The submit and train tests run the demo spec under a pipeline name and a data folder of their
# own: the `demo` pipeline (its runs, recorded schema, feature rows, model versions and the files
# under <home>/demo/data) belongs to `platformctl demo`, which test_demo_against_the_running_cluster
# runs, so no test's outcome depends on whether that one ran before it.
PIPELINE = "cli-e2e"


class Submitted(NamedTuple):
    spec: Path  # inside its own folder, which is the working directory the jobs upload
    first: dict  # `submit --wait --json` of the first run, which ingested both days


@pytest.fixture(scope="module")
def submitted(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Submitted:  # noqa: ANN001
    """Two days of data and one completed run of the pipeline, for every test that needs a
    training set, whichever of them runs first (or alone)."""
    root = tmp_path_factory.mktemp("cli-e2e")
    data, folder = root / "data", root / "spec"
    write_demo_data(data, DemoDataConfig(days=2, rows_per_day=300, seed=11))
    folder.mkdir()
    text = (ROOT / DEMO).read_text()
    assert "name: demo\n" in text and "${PLATFORM_HOME}/demo/data" in text
    spec = folder / "pipeline.yaml"
    spec.write_text(text.replace("name: demo\n", f"name: {PIPELINE}\n")
                    .replace("${PLATFORM_HOME}/demo/data", str(data)))
    first = platformctl("submit", str(spec), "--wait", "--json", cwd=folder)
    assert first.returncode == 0, first.stdout + first.stderr
    return Submitted(spec, json.loads(first.stdout))


def test_cluster_up_is_idempotent_and_status_reports_it(ray_cluster) -> None:  # noqa: ANN001
    again = platformctl("cluster", "up", "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["started"] is False
    assert data["state"]["dashboard_url"] == ray_cluster["dashboard_url"]
    st = platformctl("cluster", "status", "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["local"] is True and status["dashboard_url"] == ray_cluster["dashboard_url"]
    assert sum(n["cpus"] for n in status["nodes"]) == 2
    assert isinstance(status["serve_applications"], dict)


def test_dashboard_requires_the_token(ray_cluster) -> None:  # noqa: ANN001
    resp = requests.get(ray_cluster["dashboard_url"] + "/api/jobs/", timeout=10)
    assert resp.status_code == 401


def test_dashboard_command_gives_the_token_the_dashboard_accepts(ray_cluster, session_home: Path) -> None:  # noqa: ANN001
    """`cluster dashboard` prints the URL and the token: the dashboard's own login endpoint (what
    its token prompt posts) accepts it and sets the session cookie, with which the dashboard's
    API answers; the command it prints for later finds the same token through Ray's own CLI."""
    out = platformctl("cluster", "dashboard", "--no-open", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    access = json.loads(out.stdout)
    assert access["url"] == ray_cluster["dashboard_url"] and access["auth_mode"] == "token"
    login = requests.post(access["url"] + "/api/authenticate",
                          headers={"Authorization": f"Bearer {access['token']}"}, timeout=10)
    assert login.status_code == 200, login.text
    cookie = login.cookies.get("ray-authentication-token")
    assert cookie == access["token"]
    jobs = requests.get(access["url"] + "/api/jobs/", cookies={"ray-authentication-token": cookie},
                        timeout=10)
    assert jobs.status_code == 200
    wrong = requests.post(access["url"] + "/api/authenticate",
                          headers={"Authorization": "Bearer " + "0" * len(access["token"])}, timeout=10)
    assert wrong.status_code == 403
    import os
    import shlex
    import subprocess
    import sys

    assignment, *command = shlex.split(access["get_token_command"])
    key, value = assignment.split("=", 1)
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env[key] = value
    ray_cli = str(Path(sys.executable).parent / command[0])
    again = subprocess.run([ray_cli, *command[1:]], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert access["token"] in again.stdout
    human = platformctl("cluster", "dashboard", "--no-open")
    assert human.returncode == 0 and access["token"] in human.stdout and access["url"] in human.stdout


def test_cluster_up_metrics_starts_a_prometheus_that_scrapes_every_node(ray_cluster) -> None:  # noqa: ANN001
    """`cluster up --metrics` on the running cluster starts Debian's Prometheus with the platform's
    configuration: it finds Ray's nodes through Ray's service-discovery file, scrapes them (the
    targets are up) and answers a query for one of Ray's series; `cluster down` would stop it."""
    import os
    import shutil

    from mlplatform.runtime import prometheus
    from mlplatform.settings import load_settings

    if prometheus.binary() is None:
        if os.environ.get("PLATFORM_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("prometheus is required (PLATFORM_REQUIRE_PROMETHEUS=1) but not installed")
        pytest.skip("no prometheus binary (apt-get install prometheus)")
    settings = load_settings()
    try:
        out = platformctl("cluster", "up", "--metrics", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        server = json.loads(out.stdout)["metrics"]
        assert server["url"] and not server["error"], server
        deadline = time.monotonic() + 90
        targets: list = []
        while time.monotonic() < deadline:
            answer = requests.get(server["url"] + "/api/v1/targets", timeout=5).json()
            targets = answer["data"]["activeTargets"]
            if targets and all(t["health"] == "up" for t in targets):
                break
            time.sleep(1)
        assert targets and all(t["health"] == "up" for t in targets), targets
        assert {t["labels"]["job"] for t in targets} == {"ray"}
        found: list = []
        while time.monotonic() < deadline and not found:
            found = requests.get(server["url"] + "/api/v1/query", params={"query": "ray_node_cpu_count"},
                                 timeout=5).json()["data"]["result"]
            time.sleep(1)
        assert found, "Prometheus holds no ray_node_cpu_count series"
        again = json.loads(platformctl("cluster", "up", "--metrics", "--json").stdout)["metrics"]
        assert again["pid"] == server["pid"]  # idempotent: the running one is reported
    finally:
        stopped = prometheus.stop(settings)
        shutil.rmtree(settings.home / "prometheus", ignore_errors=True)
    assert stopped


def test_submit_wait_then_nothing_new(ray_cluster, submitted: Submitted, session_home: Path) -> None:  # noqa: ANN001
    sub = submitted.first
    assert sub["job"]["status"] == "SUCCEEDED"

    # The dashboard's own job API lists the job.
    token = (session_home / "ray" / "auth_token").read_text().strip()
    jobs = requests.get(ray_cluster["dashboard_url"] + "/api/jobs/",
                        headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert sub["job_id"] in [j["submission_id"] for j in jobs]

    shown = cli("runs", "show", sub["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    assert run["status"] == "SUCCEEDED"
    assert [(s["step"], s["status"]) for s in run["steps"]] == [
        ("ingest", "COMPLETE"), ("validate", "COMPLETE"), ("featurize", "COMPLETE"),
        ("training_set", "COMPLETE"), ("train", "COMPLETE"), ("evaluate", "COMPLETE"),
        ("register", "COMPLETE")]  # the first model fails min_value 0.6 here: no promote
    training = [e["artifact"] for e in run["artifacts"]
                if e["type"] == "OUTPUT" and e["artifact"]["kind"] == "training_set"]
    assert len(training) == 1 and training[0]["properties"]["service"] == "churn"
    assert run["steps"][0]["duration_s"] > 0
    assert run["properties"]["job_id"] == sub["job_id"]
    snaps = [e["artifact"] for e in run["artifacts"]
             if e["type"] == "OUTPUT" and e["artifact"]["kind"] == "dataset_snapshot"]
    assert len(snaps) == 1 and len(snaps[0]["content_hash"]) == 64
    assert snaps[0]["properties"]["rows"] == 600
    table = cli("runs", "show", sub["run_id"])
    assert "ingest" in table.stdout and snaps[0]["content_hash"][:16] in table.stdout

    again = platformctl("submit", str(submitted.spec), "--wait", "--json", cwd=submitted.spec.parent)
    assert again.returncode == 0, again.stderr
    job2 = json.loads(again.stdout)
    logs = cli("jobs", "logs", job2["job_id"])
    assert "nothing new to ingest" in logs.stdout
    runs = json.loads(cli("runs", "list", PIPELINE, "--json").stdout)
    assert runs[0]["run_id"] == job2["run_id"]
    assert "nothing new to ingest" in runs[0]["properties"]["message"]


def test_train_tune_models_and_the_mlflow_ui_by_hand(ray_cluster, submitted: Submitted) -> None:  # noqa: ANN001
    """Manual mode on the training set the submitted run left (the fixture's, not another
    test's): train (a Ray Job), tune (a search from here), the registry commands, and the
    MLflow UI's own REST API. Version 1 is the fixture run's model; nothing else registers
    models of this pipeline."""
    spec, cwd = str(submitted.spec), submitted.spec.parent
    trained = platformctl("train", spec, "--json", timeout=600, cwd=cwd)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    out = json.loads(trained.stdout)
    assert out["job"]["status"] == "SUCCEEDED" and out["register"][PIPELINE]["version"] == "2"
    versions = json.loads(cli("models", "list", PIPELINE, "--json").stdout)
    assert [v["version"] for v in versions] == ["1", "2"]
    assert all(v["tags"]["gate.decision"] in ("passed", "rejected") for v in versions)
    tuned = platformctl("tune", spec, "--num-samples", "2", "--json", timeout=600, cwd=cwd)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    result = json.loads(tuned.stdout)
    assert len(result["trials"]) == 2 and 0 < result["best_score"] <= 1
    assert set(result["best_config"]) == {"learning_rate", "max_leaf_nodes"}
    listed = json.loads(cli("models", "list", PIPELINE, "--json").stdout)
    assert len(listed) == 2  # tune registers nothing

    ui = platformctl("ui", "--port", "0", "--detach", "--json", timeout=120)
    assert ui.returncode == 0, ui.stdout + ui.stderr
    info = json.loads(ui.stdout)
    assert info["url"].startswith("http://127.0.0.1:")
    try:
        api = info["url"] + "/api/2.0/mlflow"
        models = requests.get(f"{api}/registered-models/search", timeout=30).json()["registered_models"]
        mine = next(m for m in models if m["name"] == PIPELINE)
        aliases = {a["alias"]: a["version"] for a in mine.get("aliases", [])}
        champion = next((v for v in versions if "champion" in v["aliases"]), None)
        assert aliases.get("champion") == (champion["version"] if champion else None)
        found = requests.get(f"{api}/model-versions/search", params={"filter": f"name='{PIPELINE}'"},
                             timeout=30).json()["model_versions"]
        assert sorted(v["version"] for v in found) == ["1", "2"]
        run = requests.get(f"{api}/runs/get", params={"run_id": found[0]["run_id"]}, timeout=30).json()
        assert "holdout_roc_auc" in {m["key"] for m in run["run"]["data"]["metrics"]}
        assert requests.get(info["url"], timeout=30).status_code == 200  # the UI page itself
    finally:
        import os
        import signal

        os.killpg(info["pid"], signal.SIGTERM)  # the server runs in a process group of its own


def test_bad_model_input_is_refused_before_any_cluster_work(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    text = (ROOT / DEMO).read_text()
    cases = [
        ("train", "estimator: sklearn.ensemble.HistGradientBoostingClassifier", "estimator: os.system",
         "model.estimator 'os.system': module not on the allow-list"),
        ("tune", "params: {max_iter: 100}", "params: {max_iterr: 100}", "has no parameter(s) ['max_iterr']"),
    ]
    for command, old, new, message in cases:
        spec = tmp_path / "bad.yaml"
        spec.write_text(text.replace(old, new).replace("${PLATFORM_HOME}", str(ROOT / ".nowhere")))
        result = platformctl(command, str(spec))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
        assert "submitted job" not in result.stdout
    empty = tmp_path / "empty.yaml"
    block = ("    space:\n      learning_rate: {type: loguniform, low: 0.02, high: 0.3}\n"
             "      max_leaf_nodes: {type: randint, low: 8, high: 64}\n")
    assert block in text
    empty.write_text(text.replace(block, "    space: {}\n"))
    result = platformctl("tune", str(empty))
    assert result.returncode == 2 and "search.space is empty" in result.stderr, result.stderr


def test_failing_job_is_reported(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    spec = ROOT / "tests" / "e2e" / "missing_source.yaml"
    result = platformctl("submit", str(spec.relative_to(ROOT)), "--wait")
    assert result.returncode != 0
    assert "FAILED" in result.stdout
    job_id = next(line.split()[2] for line in result.stdout.splitlines()
                  if line.startswith("submitted job"))
    status = json.loads(cli("jobs", "status", job_id, "--json").stdout)
    assert status["status"] == "FAILED"
    human = cli("jobs", "status", job_id)
    assert "source.path" in human.stdout and "no such file or folder" in human.stdout
    logs = cli("jobs", "logs", job_id)
    assert "source.path" in logs.stdout and "FAILED" in logs.stdout
    listed = json.loads(cli("jobs", "list", "--json").stdout)
    assert job_id in [j["job_id"] for j in listed]


def test_bad_spec_is_refused_before_submitting(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    bad = ROOT / "tests" / "e2e" / "bad_spec.yaml"
    result = platformctl("submit", str(bad.relative_to(ROOT)), "--wait")
    assert result.returncode == 2
    assert "model.search.num_samples" in result.stderr and "Traceback" not in result.stderr


def test_unknown_job_and_unreachable_cluster(ray_cluster) -> None:  # noqa: ANN001
    result = platformctl("jobs", "status", "no-such-job")
    assert result.returncode == 2 and "not found" in result.stderr
    from mlplatform.runtime.local import free_port

    t0 = time.monotonic()
    result = platformctl("jobs", "list", "--address", f"http://127.0.0.1:{free_port()}",
                         timeout=30)
    assert time.monotonic() - t0 < 10
    assert result.returncode != 0 and "cannot reach the Ray cluster" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_against_the_running_cluster(ray_cluster, session_home: Path) -> None:  # noqa: ANN001
    result = platformctl("demo", "--days", "1", "--rows-per-day", "300", "--drift-day", "0",
                         timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already running" in result.stdout
    assert "Where to look" in result.stdout and ray_cluster["dashboard_url"] in result.stdout
    assert "validation.html" in result.stdout


def _serve_ports_apart(ours: list, theirs: list) -> None:
    """Two clusters on one machine hand Serve no port in common. With HAProxy in front, Serve's
    Python proxy (HAProxy's backup server) and the replicas' direct ingress bind with
    SO_REUSEPORT: a port both clusters used would be shared silently, and one cluster's requests
    answered by the other's application of the same name. Read from each cluster's running GCS
    (whose environment Serve's controller and replicas inherit), with Ray's own defaults where a
    setting is absent."""
    from ray.serve._private import constants

    def ports(procs: list) -> set[int]:
        gcs = next(p for p in procs if "gcs_server" in p.name())
        env = gcs.environ()
        if env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
            return set()  # Serve's own proxy on the cluster's Serve port, a port chosen free
        out = {int(env.get(f"RAY_SERVE_FALLBACK_PROXY_{kind}_PORT",
                           getattr(constants, f"RAY_SERVE_FALLBACK_PROXY_{kind}_PORT")))
               for kind in ("HTTP", "GRPC")}
        for kind in ("HTTP", "GRPC"):
            low = env.get(f"RAY_SERVE_DIRECT_INGRESS_MIN_{kind}_PORT")
            high = env.get(f"RAY_SERVE_DIRECT_INGRESS_MAX_{kind}_PORT")
            assert low and high, f"{kind} direct-ingress ports left to Ray's fixed range"
            out |= set(range(int(low), int(high) + 1))
        return out

    mine, other = ports(ours), ports(theirs)
    assert not mine & other, sorted(mine & other)


def test_down_stops_only_its_own_cluster(ray_cluster, tmp_path: Path) -> None:  # noqa: ANN001
    from mlplatform.runtime.local import cluster_processes, free_port

    # As a new user would: no RAY_AUTH_* in the environment at all.
    other = {"PLATFORM_HOME": str(tmp_path / "other")}
    unset = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")
    up = platformctl("cluster", "up", "--num-cpus", "1", "--port", str(free_port()),
                     "--dashboard-port", str(free_port()), "--object-store-mb", "100", "--json",
                     env=other, unset=unset)
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)["state"]
    temp_dir, port = state["temp_dir"], int(state["gcs_address"].rsplit(":", 1)[1])
    try:
        assert cluster_processes(temp_dir, port)
        _serve_ports_apart(cluster_processes(ray_cluster["temp_dir"]), cluster_processes(temp_dir, port))
        listed = platformctl("jobs", "list", "--json", env=other, unset=unset)
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    except BaseException:  # never leave the second cluster running for the rest of the session
        for proc in cluster_processes(temp_dir, port):
            proc.kill()
        raise
    down = platformctl("cluster", "down", "--json", env=other, unset=unset)
    assert down.returncode == 0 and json.loads(down.stdout)["stopped_processes"] > 0
    assert cluster_processes(temp_dir, port) == []
    assert cluster_processes(ray_cluster["temp_dir"])  # the session's cluster still runs
    assert platformctl("cluster", "status", "--json").returncode == 0
