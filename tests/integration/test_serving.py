"""Serving on the session's real Ray Serve: the demo runs' deploy step served the champion
(tests/integration/conftest.py); these tests talk to it over real HTTP and check it
against the models loaded offline from the registry (the independent truth)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import requests

from mlplatform import storage
from mlplatform.models.registry import ModelRegistry
from mlplatform.services import Services
from mlplatform.serving.client import ServeControl
from mlplatform.serving.deployer import InfraValidationFailed, change
from mlplatform.serving.infra import json_value, sample_rows
from mlplatform.serving.predictions import read_predictions
from tests import backends
from tests.conftest import cli, platformctl

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def served(demo_runs: dict) -> dict[str, Any]:
    settings = demo_runs["settings"]
    services = Services(settings)
    champion = services.models.champion("demo")
    assert champion is not None
    return {"services": services, "settings": settings, "spec": demo_runs["spec"], "champion": champion,
            "url": f"{settings.serve_url}/demo", "control": ServeControl(settings)}


def _rows(served: dict, version: str, n: int) -> pd.DataFrame:
    return sample_rows(served["services"], "demo", version, n)


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in r.items()} for r in df.to_dict("records")]


def _post(served: dict, path: str, body: Any, **kw: Any) -> requests.Response:
    return requests.post(served["url"] + path, json=body, timeout=30, **kw)


def _logged(served: dict) -> pd.DataFrame:
    return read_predictions(served["settings"].storage_uri, "demo", "churn")


def test_the_rollout_step_serves_each_new_champion(demo_runs: dict, served: dict) -> None:
    deploys = [s for r in demo_runs["reports"] for s in r.steps if s.step == "rollout"]
    assert [d.status for d in deploys] == ["COMPLETE", "COMPLETE", "SKIPPED"]  # day 3 was rejected
    state = served["control"].app("demo")
    assert state is not None and state.status == "RUNNING" and state.config is not None
    assert state.config.champion == served["champion"]
    assert state.config.weights[served["champion"]] == 100
    previous = [v for v in state.config.weights if v != served["champion"]]
    if served["champion"] != "1":  # the day-1 champion stays deployed, idle, for a rollback
        assert previous == ["1"] and state.config.weights["1"] == 0
        assert state.config.slot("1").idle_until is not None

    df = _rows(served, served["champion"], 20)
    answer = _post(served, "/predict", {"rows": _records(df)}).json()["predictions"]
    model = served["services"].models.load("demo", served["champion"])
    assert [a["prediction"] for a in answer] == model.predict(df).tolist()
    assert np.allclose([a["score"] for a in answer], model.predict_proba(df)[:, 1], rtol=0, atol=1e-12)
    assert {a["version"] for a in answer} == {served["champion"]}
    assert {a["variant"] for a in answer} == {"champion"}
    assert len({a["request_id"] for a in answer}) == 20


def test_entity_ids_get_online_features(demo_runs: dict, served: dict) -> None:
    summary = {s.step: s.summary for s in _run_detail(demo_runs, 3).steps}["training_set"]
    entity, at = summary["sample_entity"], summary["sample_at"]
    answer = _post(served, "/predict", {"entities": [entity], "at": at}).json()["predictions"][0]
    vector = Services(served["settings"]).feature_store(served["spec"]).get_online_features(
        [entity], "churn", at=pd.Timestamp(at).to_pydatetime())[0]
    model = served["services"].models.load("demo", served["champion"])
    names = list(model.feature_names_in_)
    frame = pd.DataFrame([{n: vector.values[n] for n in names}]).astype(
        {n: "float64" for n in names if not isinstance(vector.values[n], str)})
    assert answer["prediction"] == model.predict(frame)[0]
    assert answer["score"] == pytest.approx(model.predict_proba(frame)[0, 1], abs=1e-12)
    stale = _post(served, "/predict", {"entities": [entity]})  # now: the demo's events are months old
    assert stale.status_code == 404 and entity in stale.json()["error"]
    assert "OUTSIDE_MAX_AGE" in stale.json()["error"]
    unknown = _post(served, "/predict", {"entities": ["no-such-customer"], "at": at})
    assert unknown.status_code == 404 and "NOT_FOUND" in unknown.json()["error"]
    out = cli("predict", "demo", "--entity", entity, "--at", at, "--json", env=demo_runs["env"])
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["predictions"][0]["prediction"] == answer["prediction"]


def test_row_wise_transformations_run_in_the_replica(served: dict) -> None:
    """Rows without the features the demo's transformation derives (engagement_score,
    spend_per_session) get them computed by that same function in the replica."""
    df = _rows(served, served["champion"], 5)
    derived = ["engagement_score", "spend_per_session"]
    full = _post(served, "/predict", {"rows": _records(df)}).json()["predictions"]
    raw = _post(served, "/predict", {"rows": _records(df.drop(columns=derived))})
    assert raw.status_code == 200, raw.text
    assert [a["score"] for a in raw.json()["predictions"]] == pytest.approx([a["score"] for a in full],
                                                                            abs=1e-12)
    odd = _post(served, "/predict", {"rows": [{**_records(df.drop(columns=derived))[0], "shoe_size": 1}]})
    assert odd.status_code == 400 and "shoe_size" in odd.json()["error"]


def _run_detail(demo_runs: dict, day: int) -> Any:
    from mlplatform.metadata.store import MetadataStore

    return MetadataStore(demo_runs["settings"].metadata_url).run(demo_runs["reports"][day - 1].run_id)


def test_an_open_inference_protocol_client_gets_predictions(served: dict) -> None:
    import tritonclient.http as http

    df = _rows(served, served["champion"], 7)
    client = http.InferenceServerClient(served["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("demo")
    meta = client.get_model_metadata("demo")
    assert [i["name"] for i in meta["inputs"]] == list(df.columns)
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types["device"] == "BYTES" and types["sessions_7d"] == "FP64"
    inputs = []
    for col in df.columns:
        if types[col] == "BYTES":
            arr = np.array([str(v).encode() for v in df[col]], dtype=np.object_)
        else:
            arr = df[col].to_numpy(dtype=np.float64)
        tensor = http.InferInput(col, [len(df)], types[col])
        tensor.set_data_from_numpy(arr, binary_data=False)
        inputs.append(tensor)
    wanted = [http.InferRequestedOutput(o, binary_data=False) for o in ("predict", "predict_proba")]
    result = client.infer("demo", inputs, outputs=wanted)
    model = served["services"].models.load("demo", served["champion"])
    assert result.as_numpy("predict").tolist() == model.predict(df).tolist()
    assert np.allclose(result.as_numpy("predict_proba"), model.predict_proba(df), rtol=0, atol=1e-12)
    assert result.get_response()["model_version"] == served["champion"]
    with pytest.raises(Exception, match="unknown model"):
        client.infer("nope", inputs)
    bad = requests.post(served["url"] + "/v2/models/demo/infer", timeout=10,
                        json={"inputs": [{"name": "sessions_7d", "shape": [1], "datatype": "BYTES",
                                          "data": ["x"]}]})
    assert bad.status_code == 400 and "error" in bad.json() and "sessions_7d" in bad.json()["error"]


def test_mlflow_scoring_formats_match_pyfunc(served: dict) -> None:
    version = served["champion"]
    df = _rows(served, version, 9)
    offline = mlflow.pyfunc.load_model(f"models:/demo/{version}").predict(df)
    records = _records(df)
    bodies = {
        "dataframe_split": {"dataframe_split": {"columns": list(df.columns),
                                                "data": [list(r.values()) for r in records]}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: [r[c] for r in records] for c in df.columns}},
    }
    for name, body in bodies.items():
        resp = _post(served, "/invocations", body)
        assert resp.status_code == 200, (name, resp.text)
        assert resp.json()["predictions"] == np.asarray(offline).tolist(), name
    assert requests.get(served["url"] + "/ping", timeout=10).status_code == 200
    two = _post(served, "/invocations", {**bodies["instances"], **bodies["dataframe_records"]})
    assert two.status_code == 400 and "error" in two.json()


class _Answer:
    """The part of a `requests.Response` the 4xx table reads, for an answer read off a raw
    connection."""

    def __init__(self, status_code: int, text: str):
        self.status_code = status_code
        self.text = text

    def json(self) -> Any:
        return json.loads(self.text)


def _refused_early(url: str, declared: int) -> _Answer:
    """Declare a body over the limit and send none of it, as a client sending
    `Expect: 100-continue` (curl does for large bodies) waits to be told: the server must answer
    from the declared size alone. Sending the body as well would make the check racy, not the
    server: a server that refuses without reading closes with the body unread, and the kernel's
    reset may drop its answer before the client reads it (CI saw that as IncompleteRead)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", parts.path)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(declared))
        conn.endheaders()
        resp = conn.getresponse()
        return _Answer(resp.status, resp.read().decode())
    finally:
        conn.close()


def test_bad_input_is_a_4xx_naming_what_was_wrong(served: dict) -> None:
    url = served["url"]
    row = _records(_rows(served, served["champion"], 1))[0]
    cases: list[tuple[requests.Response | _Answer, int, str]] = [
        (requests.post(url + "/predict", data=b'{"rows": [', timeout=10,
                       headers={"content-type": "application/json"}), 400, "malformed JSON"),
        (requests.post(url + "/predict", data=b"a=1", timeout=10,
                       headers={"content-type": "application/x-www-form-urlencoded"}), 415, "content type"),
        (requests.post(url + "/predict", data=b"", timeout=10,
                       headers={"content-type": "application/json"}), 400, "empty body"),
        (_refused_early(url + "/predict", 2 * 1024 * 1024 + 2), 413, "limit"),
        (_post(served, "/predict", {"rows": [{**row, "sessions_7d": "many"}]}), 400, "sessions_7d"),
        (_post(served, "/predict", {"rows": [{k: v for k, v in row.items() if k != "income"}]}), 400,
         "income"),
        (_post(served, "/predict", {"rows": [{**row, "shoe_size": 44}]}), 400, "shoe_size"),
        (_post(served, "/predict", {"rows": [row] * 1001}), 413, "1001"),
        (_post(served, "/predict", {"rows": [row]}, headers={"x-model-version": "99"}), 404, "99"),
        (_post(served, "/feedback", {"request_id": "f" * 32, "label": 1}), 404, "unknown request id"),
        (requests.get(url + "/v2/models/other", timeout=10), 404, "other"),
        (requests.get(url + "/nowhere", timeout=10), 404, "/nowhere"),
    ]
    for resp, status, needle in cases:
        assert resp.status_code == status, (needle, resp.status_code, resp.text[:300])
        body = resp.json()
        assert needle in body["error"], (needle, body)
        assert "Traceback" not in resp.text
    unknown_pipeline = requests.post(served["settings"].serve_url + "/nopipe/predict", json={}, timeout=10)
    assert unknown_pipeline.status_code == 404
    # The replica survived all of it.
    assert _post(served, "/predict", {"rows": [row]}).status_code == 200


def test_feedback_is_joined_to_its_prediction(served: dict) -> None:
    from mlplatform.serving.predictions import joined_feedback

    row = _records(_rows(served, served["champion"], 1))[0]
    rid = _post(served, "/predict", {"rows": [row]}).json()["predictions"][0]["request_id"]
    ok = _post(served, "/feedback", {"feedback": [{"request_id": rid, "label": 1}]})
    assert ok.status_code == 200 and ok.json() == {"accepted": 1}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        joined = joined_feedback(served["settings"].storage_uri, "demo", "churn")
        hit = joined.loc[joined["request_id"] == rid]
        if len(hit) and hit["label"].notna().all():
            break
        time.sleep(0.5)
    assert hit["label"].tolist() == ["1"]


def _load(served: dict, stop: threading.Event, rows: list[dict[str, Any]],
          out: list[tuple[int, str, float]]) -> None:
    session = requests.Session()
    i = 0
    while not stop.is_set():
        body = {"rows": [rows[i % len(rows)]]}
        i += 1
        sent = time.monotonic()
        try:
            resp = session.post(served["url"] + "/predict", json=body, timeout=30)
            version = resp.json()["predictions"][0]["version"] if resp.status_code == 200 else resp.text[:200]
            out.append((resp.status_code, version, sent))
        except requests.RequestException as exc:
            out.append((-1, str(exc), sent))


def test_traffic_changes_under_load_fail_no_request(served: dict) -> None:
    """Ten changes of weights and of the set of versions while clients keep sending: no request
    fails, and once a change is applied a version at weight 0 gets nothing."""
    services, spec, champ = served["services"], served["spec"], served["champion"]
    rows = _records(_rows(served, champ, 50))
    results: list[tuple[int, str, float]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(served, stop, rows, results)) for _ in range(3)]
    for w in workers:
        w.start()
    plans = [{"1": 50, champ: 50}, {"1": 90, champ: 10}, {"3": 20, champ: 80}, {"3": 100},
             {"1": 30, "3": 70}, {champ: 100}, {"1": 10, champ: 90}, {"3": 50, champ: 50},
             {"1": 100}, {champ: 100}]
    checks: list[tuple[float, float, set[str]]] = []  # (applied, next change begins, versions with weight)
    try:
        time.sleep(1)
        for plan in plans:
            if checks:
                checks[-1] = (checks[-1][0], time.monotonic(), checks[-1][2])
            change(services, spec, weights=plan, champion=champ)
            checks.append((time.monotonic(), float("inf"), {v for v, w in plan.items() if w > 0}))
            time.sleep(0.8)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    failed = [r for r in results if r[0] != 200]
    assert len(results) > 100 and not failed, failed[:5]
    for start, end, live in checks:  # requests sent while this plan stood saw only its versions
        window = [v for status, v, t in results if start < t < end]
        assert window and set(window) <= live, (live, Counter(window))
    state = served["control"].app("demo")
    assert state is not None and state.config is not None
    assert sorted(state.config.weights) == sorted({"1", "3", champ})  # removed versions stay idle, weight 0


def test_sticky_assignment_per_entity_over_http(served: dict) -> None:
    services, spec, champ = served["services"], served["spec"], served["champion"]
    change(services, spec, weights={"1": 50, champ: 50}, champion=champ)
    base = _records(_rows(served, champ, 1))[0]
    keys = [f"sticky-{i}" for i in range(300)]
    body = {"rows": [{**base, "customer_id": k} for k in keys]}
    first = [a["version"] for a in _post(served, "/predict", body).json()["predictions"]]
    again = [a["version"] for a in _post(served, "/predict", body).json()["predictions"]]
    assert first == again and 0.35 < first.count("1") / len(keys) < 0.65
    change(services, spec, weights={"1": 20, champ: 80}, champion=champ)
    after = [a["version"] for a in _post(served, "/predict", body).json()["predictions"]]
    moved = [(a, b) for a, b in zip(first, after, strict=True) if a != b]
    assert moved and all(a == "1" and b == champ for a, b in moved)  # only the share that must move
    change(services, spec, weights={champ: 100}, champion=champ)


def test_a_shadow_gets_a_copy_and_never_answers(served: dict) -> None:
    services, spec, champ = served["services"], served["spec"], served["champion"]
    change(services, spec, weights={champ: 100}, champion=champ, shadow="3")
    rows = _records(_rows(served, champ, 30))
    ids: list[str] = []
    for r in rows:
        answer = _post(served, "/predict", {"rows": [r]}).json()["predictions"][0]
        assert answer["version"] == champ and answer["variant"] == "champion"
        ids.append(answer["request_id"])
    change(services, spec, weights={champ: 100}, champion=champ, clear_shadow=True)  # flushes nothing yet
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        log = _logged(served)
        shadow = log.loc[(log["variant"] == "shadow") & log["request_id"].isin(ids)]
        if len(shadow) == len(ids):
            break
        time.sleep(0.5)
    assert sorted(shadow["request_id"]) == sorted(ids) and set(shadow["version"]) == {"3"}
    offline = served["services"].models.load("demo", "3").predict(_rows(served, champ, 30))
    by_id = dict(zip(shadow["request_id"], shadow["output"], strict=True))
    assert [by_id[i] for i in ids] == [str(v) for v in offline]


def test_infra_validation_keeps_a_broken_version_from_traffic(demo_runs: dict, served: dict) -> None:
    """A version whose files changed after registration does not load in the replica: it never
    gets traffic, the live weights stay, and an alert says why."""
    services, spec, champ = served["services"], served["spec"], served["champion"]
    change(services, spec, weights={champ: 100}, champion=champ, remove=["3"])
    reg = ModelRegistry(served["settings"])
    run_id = reg.version("demo", "3").run_id
    # The model's MLmodel file in the artifact store: a local folder, or S3 with --backends cluster.
    fs, root = storage.resolve(reg.client.get_run(run_id).info.artifact_uri)
    target = f"{root}/model/MLmodel"
    with fs.open_input_stream(target) as f:
        original = f.read()
    try:
        with fs.open_output_stream(target) as f:
            f.write(original + b"\n# tampered\n")
        with pytest.raises(InfraValidationFailed, match="v3"):
            change(services, spec, weights={"3": 10, champ: 90}, champion=champ)
    finally:
        with fs.open_output_stream(target) as f:
            f.write(original)
    state = served["control"].app("demo")
    assert state is not None and state.config is not None
    assert state.config.weights.get(champ) == 100 and "3" not in state.config.weights
    alerts = [a for a in services.metadata.alerts("demo") if a.kind == "infra_validation"]
    assert alerts and "v3" in alerts[0].message and "sha256" in alerts[0].message


def test_serve_status_and_traffic_from_the_cli(demo_runs: dict, served: dict) -> None:
    champ = served["champion"]
    # A user's shell: RAY_AUTH_MODE=token as they set it (not one this test process applied).
    unset = ("_PLATFORM_APPLIED_RAY_AUTH_MODE",)
    out = platformctl("serve", "traffic", "demo", f"v{champ}=100", "--json", env=demo_runs["env"],
                      unset=unset)
    assert out.returncode == 0, out.stderr
    status = platformctl("serve", "status", "demo", "--json", env=demo_runs["env"], unset=unset)
    assert status.returncode == 0, status.stderr
    [s] = json.loads(status.stdout)
    assert s["champion"] == champ and s["status"] == "RUNNING" and s["replicas"] >= 1
    live = {v["version"]: v for v in s["versions"]}
    assert live[champ]["weight"] == 100 and live[champ]["loaded"] and live[champ]["error"] is None
    assert s["requests_by_variant"].get("champion", 0) > 0
    bad = cli("serve", "traffic", "demo", "v1=60", f"v{champ}=30", env=demo_runs["env"])
    assert bad.returncode != 0 and "sum to 100" in bad.stderr


def test_the_prediction_log_loses_nothing_on_shutdown(demo_runs: dict, served: dict) -> None:
    """Every prediction reaches the log, including those still buffered in a replica when the
    application is taken down (Serve's graceful shutdown flushes it)."""
    before = _logged(served)
    rows = _records(_rows(served, served["champion"], 40))
    ids = []
    for i in range(5):
        ids += [a["request_id"] for a in _post(served, "/predict", {"rows": rows[i * 8:(i + 1) * 8]})
                .json()["predictions"]]
    assert served["control"].down("demo")
    after = _logged(served)
    new = after.loc[~after["request_id"].isin(before["request_id"])]
    assert sorted(new.loc[new["variant"] != "shadow", "request_id"]) == sorted(ids)
    # Back for anything that runs later: the champion again, through the deploy path.
    change(served["services"], served["spec"], weights={served["champion"]: 100}, champion=served["champion"])


def test_the_served_openapi_documents_every_route_and_body(served: dict) -> None:
    doc = requests.get(served["url"] + "/openapi.json", timeout=10).json()
    paths = doc["paths"]
    for path, method in [("/predict", "post"), ("/invocations", "post"), ("/ping", "get"),
                         ("/feedback", "post"), ("/v2/health/live", "get"), ("/v2/health/ready", "get"),
                         ("/v2/models/{name}", "get"), ("/v2/models/{name}/ready", "get"),
                         ("/v2/models/{name}/infer", "post"),
                         ("/v2/models/{name}/versions/{version}/infer", "post")]:
        assert method in paths[path], path
    schemas = doc["components"]["schemas"]
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"].rsplit("/", 1)[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert refs <= set(schemas), refs - set(schemas)  # every reference resolves
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[body.rsplit("/", 1)[-1]]["properties"]) == {"rows", "columns", "entities", "at"}
    assert "400" in paths["/predict"]["post"]["responses"] and "413" in paths["/predict"]["post"]["responses"]


def test_schemathesis_cases_from_the_served_openapi_break_nothing(served: dict, capsys) -> None:  # noqa: ANN001
    """Generated cases for every documented operation (tests/fuzz/serve_cases.py) over real HTTP:
    no 5xx, no traceback, every refusal in the `{"error": ...}` shape; the replica survives."""
    from tests.fuzz.serve_cases import fuzz

    before = served["control"].app("demo")
    seen = fuzz(served["url"], max_examples=40)
    total = sum(sum(c.values()) for c in seen.values())
    with capsys.disabled():
        print(f"\nschemathesis: {total} cases over {len(seen)} operations")
        for label, counts in seen.items():
            print(f"  {label}: {sum(counts.values())} cases, statuses {dict(sorted(counts.items()))}")
    assert len(seen) >= 14 and all(sum(c.values()) > 0 for c in seen.values())
    after = served["control"].app("demo")
    assert after is not None and after.status == "RUNNING" and after.replicas == before.replicas
    row = _records(_rows(served, served["champion"], 1))[0]
    assert _post(served, "/predict", {"rows": [row]}).status_code == 200


@pytest.mark.skipif(backends.mode() == "cluster", reason="open (see the issue 13 note): on the multi-node "
                    "cluster the half-sent body never holds a replica slot (no 429 seen); checked in the "
                    "embedded run")
def test_the_spec_request_limits_hold_on_the_real_ingress(served: dict) -> None:
    """A copy of the demo app deployed with low limits in its `deploy` section: the replica
    honours each (rows, body size, per-client concurrency, slow body), over real HTTP."""
    import socket

    from mlplatform.serving.plan import ServingConfig

    control = served["control"]
    spec = served["spec"].model_copy(deep=True)
    spec.name = "demolimits"
    spec.deploy = spec.deploy.model_copy(update={"max_rows": 3, "max_body_kb": 4, "log_predictions": False,
                                                 "max_inflight_per_client": 1, "body_timeout_s": 3})
    live = control.app("demo").config
    slot = live.slot(served["champion"]).model_copy(update={"weight": 100, "idle_until": None})
    control.apply(spec, ServingConfig(pipeline="demolimits", model_name=live.model_name,
                                      champion=slot.version, versions=[slot], store=live.store,
                                      generation=1), wait_s=240)
    url = f"{served['settings'].serve_url}/demolimits"
    try:
        row = _records(_rows(served, served["champion"], 1))[0]
        assert requests.post(url + "/predict", json={"rows": [row]}, timeout=30).status_code == 200
        many = requests.post(url + "/predict", json={"rows": [row] * 4}, timeout=30)
        assert many.status_code == 413
        assert many.json() == {"error": "too many rows: 4 (the limit is 3, deploy.max_rows)"}
        big = requests.post(url + "/predict", data=b"{" + b" " * 5000 + b"}", timeout=30,
                            headers={"content-type": "application/json"})
        assert big.status_code == 413 and "4096 bytes (deploy.max_body_kb)" in big.json()["error"]

        # A client that sends half a body holds its one slot: its next request is a 429; the
        # half body itself gets a 408 once body_timeout_s has passed.
        host, port = served["settings"].serve_url.removeprefix("http://").split(":")
        slow: dict[str, bytes] = {}

        def trickle() -> None:
            data = b""
            try:
                with socket.create_connection((host, int(port)), timeout=60) as s:
                    s.sendall(b"POST /demolimits/predict HTTP/1.1\r\nhost: x\r\nx-api-key: k1\r\n"
                              b"content-type: application/json"
                              b"\r\ncontent-length: 100\r\n\r\n{\"rows\": [")
                    while b"}" not in data:
                        more = s.recv(65536)
                        if not more:
                            break
                        data += more
            except OSError as exc:  # shown by the assertions below, not lost in the thread
                data += f"[socket error after {len(data)} bytes: {exc!r}]".encode()
            slow["answer"] = data

        refused = None
        for _attempt in range(3):
            refused = None
            thread = threading.Thread(target=trickle)
            thread.start()
            # Let the half body take its slot first: a request of ours still in flight when it
            # arrives would make the half body the refused one (it then ends at once, with a 429).
            time.sleep(0.5)
            while thread.is_alive() and refused is None:
                # The client named by its API key: behind HAProxy a request may reach the replica
                # directly or through a Serve proxy, two different peer addresses.
                resp = requests.post(url + "/predict", json={"rows": [row]}, timeout=30,
                                     headers={"x-api-key": "k1"})
                if resp.status_code == 429:
                    refused = resp
            thread.join(timeout=60)
            if not slow["answer"].startswith(b"HTTP/1.1 429"):
                break
        assert refused is not None, f"no 429 while the slow body was in flight: {slow.get('answer')!r}"
        assert refused.headers["retry-after"] == "1"
        assert "limit of 1 per replica (deploy.max_inflight_per_client)" in refused.json()["error"]
        answer = slow["answer"].decode()
        assert answer.startswith("HTTP/1.1 408"), answer[:300]
        assert "did not arrive within 3 s (deploy.body_timeout_s)" in answer
        # The slot is free again, and the replica answers.
        assert requests.post(url + "/predict", json={"rows": [row]}, timeout=30).status_code == 200
    finally:
        control.down("demolimits")
