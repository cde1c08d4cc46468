"""Benchmark: online serving on Ray Serve (the platform's ingress) vs the same model on plain uvicorn.

    .venv/bin/python benchmarks/serving.py            # 10 s per point at 1, 8, 32, 64 connections
    .venv/bin/python benchmarks/serving.py --quick    # 3 s per point at 1 and 32 (smoke run)
    .venv/bin/python benchmarks/serving.py --deploy replicas=2 --deploy log_predictions=false

One run, under a throwaway PLATFORM_HOME on free ports: a local cluster (`runtime.local.up`,
num_cpus=2), 2 days of demo data, the demo pipeline run twice in a subprocess with
LogisticRegression(max_iter=200), no search and no gate thresholds (both versions register;
each run's deploy step serves the champion). Then, with wrk (-t1, a Lua script cycling through
256 pre-formatted single-row POST bodies, closed loop), at each connection count:
- platform rows:     {"rows": [a real training row]} to /demo/predict, one version live;
- platform 90/10:    the same rows plus `customer_id` (sticky routing) under a 90/10 split;
- platform entities: {"entities": [id], "at": T}, features from the SQLite online store;
- uvicorn 1w / 2w:   the baseline (benchmarks/serving_baseline.py: FastAPI + uvicorn, the same
                     registered model, the same bodies, the same online lookup), run with the
                     Ray cluster stopped, so that it has the machine the platform had;
- HAProxy:           the platform again after a cluster restart with PLATFORM_SERVE_FASTPATH=haproxy
                     (Ray's HAProxy ingress + direct ingress to the replica), if it starts.
Cold start: `platformctl serve down demo`, then the time from launching `platformctl serve deploy`
to the first 200 of a request polled every 50 ms (the CLI's start-up included: what a user waits).

Per point the JSON also has the server's CPU per request (its processes' CPU time / requests: on
2 cores the bound on throughput) and the cores other processes used (the machine is shared; the
table flags a busy point). Speed is only measured, never asserted. Results:
benchmarks/results/serving.json; logs under benchmarks/results/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.serving`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LOG_DIR = RESULTS / "logs"
OUT_JSON = RESULTS / "serving.json"
PIPELINE = "demo"
BIN = Path(sys.executable).parent
N_BODIES = 256
BUSY_CORES = 0.25
TARGET_PEAK_X_UVICORN2 = 0.35  # platform peak req/s >= 0.35x uvicorn (2 workers) peak
TARGET_P50_X_UVICORN1 = 3.0  # p50 at 1 connection <= 3x uvicorn (1 worker) p50
TARGET_NO_COLLAPSE = 0.9  # req/s at the most connections >= 90% of the peak
TARGET_SPLIT_X_SINGLE = 0.8  # 90/10 peak >= 0.8x single-version peak
JsonDict = dict[str, Any]


# --- the subprocess that writes the data and runs the pipeline ------------------------------


def prepare(home: Path, spec_path: Path, out: Path, rows_per_day: int) -> None:
    """Two pipeline runs in this (child) process: its Ray driver and imports stay out of the
    parent, which only drives wrk. Writes what the load needs: versions, bodies' rows, entities."""
    from mlplatform.artifacts import ModelVersion, TrainingSet
    from mlplatform.data.synthetic import DemoDataConfig, write_day
    from mlplatform.pipeline import run_pipeline
    from mlplatform.services import Services
    from mlplatform.serving.infra import json_value
    from mlplatform.settings import load_settings
    from mlplatform.spec_loader import load_spec
    from mlplatform.training.data import load_frame

    settings = load_settings()
    services = Services(settings)
    spec = load_spec(spec_path)
    cfg = DemoDataConfig(days=2, rows_per_day=rows_per_day, entities=1000)
    runs = []
    for day in (1, 2):
        write_day(home / "demo" / "data", cfg, day)
        began = time.perf_counter()
        report = run_pipeline(spec, services, log=print)
        runs.append({"day": day, "status": report.status, "message": report.message,
                     "seconds": round(time.perf_counter() - began, 1),
                     "steps": {s.step: s.status for s in report.steps}})
    versions = [v for v in ("1", "2") if services.metadata.find(ModelVersion, f"models:/{PIPELINE}/{v}")]
    champion = services.models.champion(PIPELINE)
    mv = services.metadata.find(ModelVersion, f"models:/{PIPELINE}/{champion}")
    ts = services.metadata.get(TrainingSet, mv.training_set_id)
    df = load_frame(ts.uri, ts.content_hash)
    sample = df.iloc[:: max(1, len(df) // N_BODIES)].head(N_BODIES)
    rows = [{c: json_value(v) for c, v in r.items()} for r in sample[ts.features].to_dict("records")]
    out.write_text(json.dumps({
        "runs": runs, "versions": versions, "champion": champion, "features": len(ts.features),
        "training_rows": len(df), "rows": rows, "entities": [str(e) for e in sample[ts.entity]],
        "at": df[ts.timestamp].max().isoformat()}))


# --- wrk -----------------------------------------------------------------------------------


def write_lua(path: Path, bodies: list[JsonDict]) -> Path:
    """A wrk script that cycles through pre-formatted requests: a new body per request (so
    sticky routing sees many entities) at no per-request Lua cost beyond an index."""
    texts = ",\n".join(f"[==[{json.dumps(b)}]==]" for b in bodies)
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local bodies = {{\n{texts}\n}}\nlocal reqs = {{}}\n"
        "for i, b in ipairs(bodies) do reqs[i] = wrk.format(nil, nil, nil, b) end\n"
        "local n = 0\nrequest = function() n = n % #reqs + 1; return reqs[n] end\n")
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(text: str) -> JsonDict:
    """Requests/sec, p50 / p99 (ms), request count, non-2xx and socket errors from wrk's text."""
    def num(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    def lat(pct: str) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return round(float(m.group(1)) * _UNITS[m.group(2)], 3) if m else None

    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()))) if sock else {}
    return {"rps": num(r"Requests/sec:\s+([\d.]+)"), "p50_ms": lat("50"), "p99_ms": lat("99"),
            "requests": int(num(r"(\d+) requests in") or 0),
            "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)") or 0),
            "socket_errors": errors, "socket_errors_total": sum(errors.values())}


def _cpu(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def run_point(url: str, lua: Path, conns: int, seconds: float,
              server: Callable[[], list[psutil.Process]]) -> JsonDict:
    """One wrk run; CPU of the server's processes, of wrk and of everything else around it."""
    cpu0, busy0 = _cpu(server()), _busy()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    proc = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                          capture_output=True, text=True, timeout=seconds + 60)
    span = time.monotonic() - began
    ru1, busy1, cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy(), _cpu(server())
    server_s = sum(v - cpu0.get(pid, 0.0) for pid, v in cpu1.items())
    wrk_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    point = {"connections": conns, **parse_wrk(proc.stdout)}
    if proc.returncode != 0 or point["rps"] is None:
        point["error"] = (proc.stderr or proc.stdout)[-500:]
    point.update(server_cores=round(server_s / span, 2), wrk_cores=round(wrk_s / span, 2),
                 other_cores=round(max(0.0, busy1 - busy0 - server_s - wrk_s) / span, 2),
                 server_cpu_ms_per_req=round(1000 * server_s / point["requests"], 2) if point["requests"]
                 else None, load_avg_1m=round(os.getloadavg()[0], 2))
    return point


def series(label: str, url: str, lua: Path, args: argparse.Namespace,
           server: Callable[[], list[psutil.Process]]) -> JsonDict:
    """A warm-up (not recorded), then one point per connection count."""
    run_point(url, lua, 8, args.warmup, server)
    points = []
    for c in args.connections:
        p = run_point(url, lua, c, args.seconds, server)
        print(f"  {label:<28} c={c:<3} {p['rps'] or 0:8.0f} req/s  p50 {p['p50_ms']} ms  p99 {p['p99_ms']} ms  "
              f"non-2xx {p['non_2xx']}  server {p['server_cpu_ms_per_req']} ms CPU/req  "
              f"other {p['other_cores']} cores", flush=True)
        points.append(p)
    return {"label": label, "url": url, "points": points}


# --- the platform and the baseline ---------------------------------------------------------


def platformctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "platformctl"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def post(url: str, body: JsonDict, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(url, json=body, timeout=10)


def cold_start(spec_path: Path, url: str, body: JsonDict, *extra: str) -> JsonDict:
    """`serve down`, then `serve deploy` timed until the first 200 (polled every 50 ms)."""
    down = platformctl("serve", "down", PIPELINE)
    began = time.monotonic()
    proc = subprocess.Popen([str(BIN / "platformctl"), "serve", "deploy", str(spec_path), *extra, "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, codes, session = None, {}, requests.Session()
    while first is None and time.monotonic() - began < 600:
        try:
            code = str(post(url, body, session).status_code)
        except requests.RequestException:
            code = "no connection"
        codes[code] = codes.get(code, 0) + 1
        if code == "200":
            first = time.monotonic() - began
        elif proc.poll() is not None and proc.returncode != 0:
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    result: JsonDict = {"first_200_s": round(first, 2) if first else None,
                        "command_s": round(time.monotonic() - began, 2), "poll_codes": codes,
                        "down_rc": down.returncode}
    try:
        result["deploy_result"] = json.loads(out)
    except ValueError:
        result["error"] = (err or out)[-2000:]
    return result


def deploy_weights(spec_path: Path, weights: dict[str, int]) -> JsonDict:
    args = [f"--weight=v{v}={w}" for v, w in weights.items()]
    began = time.monotonic()
    proc = platformctl("serve", "deploy", str(spec_path), *args, "--json")
    if proc.returncode != 0:
        raise RuntimeError(f"serve deploy {' '.join(args)} failed: {(proc.stderr or proc.stdout)[-1500:]}")
    return {"seconds": round(time.monotonic() - began, 2), "result": json.loads(proc.stdout)}


def start_uvicorn(workers: int, version: str, spec_path: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """The baseline in its own process group; returns once every worker has loaded the model."""
    from mlplatform.runtime.local import free_port

    port = free_port()
    env = {**os.environ, "BASELINE_MODEL_NAME": PIPELINE, "BASELINE_MODEL_VERSION": version,
           "BASELINE_SPEC": str(spec_path)}
    with open(log, "w") as f:
        proc = subprocess.Popen([str(BIN / "uvicorn"), "--app-dir", str(HERE), "serving_baseline:app",
                                 "--host", "127.0.0.1", f"--port={port}", f"--workers={workers}",
                                 "--log-level=info", "--no-access-log"],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while log.read_text().count("Application startup complete") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"uvicorn ({workers} workers) did not start: {h.tail(log, 15)}")
        time.sleep(0.2)
    return proc, port


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a server this script started (its own process group, by id)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=5)


def tree(pid: int) -> Callable[[], list[psutil.Process]]:
    def procs() -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
    return procs


def ray_procs(settings: Any) -> Callable[[], list[psutil.Process]]:
    from mlplatform.runtime.local import cluster_processes, read_state

    state = read_state(settings)
    port = int(state.gcs_address.rsplit(":", 1)[1])
    return lambda: cluster_processes(state.temp_dir, port)


def cluster_up(settings: Any, fastpath: str) -> JsonDict:
    from mlplatform.runtime.local import free_port, up

    os.environ["PLATFORM_SERVE_FASTPATH"] = fastpath  # read by serve_env() when the head starts
    began = time.monotonic()
    res = up(settings, num_cpus=2, port=free_port(), dashboard_port=free_port(), object_store_mb=300)
    return {"seconds": round(time.monotonic() - began, 1), "message": res.message}


def bodies_for(info: JsonDict) -> dict[str, list[JsonDict]]:
    rows, ents = info["rows"], info["entities"]
    return {"rows": [{"rows": [r]} for r in rows],
            "keyed": [{"rows": [{**r, "customer_id": e}]} for r, e in zip(rows, ents, strict=True)],
            "entities": [{"entities": [e], "at": info["at"]} for e in ents]}


def check(url: str, bodies: list[JsonDict]) -> list[JsonDict]:
    """Every body answered 200 once (else dropped, and said): wrk would count it as non-2xx."""
    session = requests.Session()
    good = [b for b in bodies if post(url, b, session).status_code == 200]
    if len(good) < len(bodies):
        print(f"  {len(bodies) - len(good)} of {len(bodies)} bodies were not answered 200: dropped", flush=True)
    if not good:
        raise RuntimeError(f"{url}: no body answered 200: {post(url, bodies[0]).text[:500]}")
    return good


def platform_modes(url: str, modes: list[str], lua: dict[str, Path], spec_path: Path, info: JsonDict,
                   args: argparse.Namespace, procs: Callable[[], list[psutil.Process]],
                   tag: str) -> dict[str, JsonDict]:
    """The platform's series: one version (rows, entities), then the 90/10 split (keyed rows)."""
    out: dict[str, JsonDict] = {}
    for mode in [m for m in ("rows", "entities") if m in modes]:
        out[mode] = series(f"platform{tag} {mode}", url, lua[mode], args, procs)
    if "keyed" in modes:
        other = next(v for v in info["versions"] if v != info["champion"])
        split = deploy_weights(spec_path, {info["champion"]: 90, other: 10})
        out["keyed"] = series(f"platform{tag} 90/10 rows+id", url, lua["keyed"], args, procs)
        status = requests.get(url.rsplit("/", 1)[0] + "/status", timeout=10).json()
        out["keyed"].update(deploy=split, replica_counts=status.get("counts"))
    return out


# --- report --------------------------------------------------------------------------------


def _peak(s: JsonDict | None) -> float | None:
    """Peak of the 2xx rate: a server shedding load with fast 503s does not count them."""
    if not s:
        return None
    rates = [p["rps"] * (1 - p["non_2xx"] / p["requests"]) for p in s["points"] if p.get("rps") and p["requests"]]
    return max(rates) if rates else None


def _at(s: JsonDict | None, conns: int, key: str) -> float | None:
    return next((p.get(key) for p in (s or {}).get("points", []) if p["connections"] == conns), None)


def targets(res: JsonDict, variant: str) -> JsonDict:
    """The issue's targets for one platform variant, against the baselines of this run."""
    s = res["series"]
    plat, split = s.get(f"{variant}:rows"), s.get(f"{variant}:keyed")
    u1, u2 = s.get("uvicorn-1w:rows"), s.get("uvicorn-2w:rows")
    out: JsonDict = {}
    peak, u2peak = _peak(plat), _peak(u2)
    if peak and u2peak:
        x = peak / u2peak
        out["peak_vs_uvicorn2"] = {"value": round(x, 3), "target": f">= {TARGET_PEAK_X_UVICORN2}",
                                   "met": x >= TARGET_PEAK_X_UVICORN2}
    p50, u1p50 = _at(plat, 1, "p50_ms"), _at(u1, 1, "p50_ms")
    if p50 and u1p50:
        x = p50 / u1p50
        out["p50_c1_vs_uvicorn1"] = {"value": round(x, 2), "target": f"<= {TARGET_P50_X_UVICORN1}",
                                     "met": x <= TARGET_P50_X_UVICORN1, "ms": [p50, u1p50]}
    if plat and peak:
        last = plat["points"][-1]
        x = last["rps"] * (1 - last["non_2xx"] / max(1, last["requests"])) / peak
        out["no_collapse"] = {"value": round(x, 3), "at_connections": last["connections"],
                              "target": f">= {TARGET_NO_COLLAPSE}", "met": x >= TARGET_NO_COLLAPSE}
    speak = _peak(split)
    if speak and peak:
        x = speak / peak
        out["split_vs_single"] = {"value": round(x, 3), "target": f">= {TARGET_SPLIT_X_SINGLE}",
                                  "met": x >= TARGET_SPLIT_X_SINGLE}
    cold = res.get("cold_start", {}).get(variant, {})
    out["cold_start_s"] = {"value": cold.get("first_200_s"), "target": "reported", "met": None}
    return out


def print_report(res: JsonDict, args: argparse.Namespace) -> None:
    from rich.markup import escape

    rows = []
    for key, s in res["series"].items():
        kind = key.split(":")[1]
        ref = _peak(res["series"].get(f"uvicorn-2w:{'entities' if kind == 'entities' else 'rows'}"))
        for p in s["points"]:
            ok = p["rps"] * (1 - p["non_2xx"] / p["requests"]) if p.get("rps") and p["requests"] else None
            busy = " BUSY" if p["other_cores"] >= BUSY_CORES else ""
            rows.append([escape(s["label"]), str(p["connections"]), h.fmt_int(p.get("rps")),
                         h.fmt_float(p.get("p50_ms")), h.fmt_float(p.get("p99_ms")),
                         h.fmt_int(p["non_2xx"]) + (f" +{p['socket_errors_total']} sock" if p["socket_errors_total"]
                                                    else ""),
                         f"{ok / ref:.2f}x" if ok and ref else "-", h.fmt_float(p.get("server_cpu_ms_per_req")),
                         f"{p['other_cores']:.2f}{busy}"])
    m = res["machine"]
    h.print_table(
        escape(f"Serving {res['config']['model']}, single-row JSON, wrk -t1 {args.seconds:g}s/point; "
               f"{m['cpu_count_logical']} CPUs"),
        [("server / mode", "left"), ("conns", "right"), ("req/s", "right"), ("p50 ms", "right"),
         ("p99 ms", "right"), ("non-2xx", "right"), ("x uvicorn-2w peak", "right"),
         ("server CPU ms/req", "right"), ("other cores", "right")],
        rows,
        caption=escape("x uvicorn-2w peak: this point's 2xx req/s over the 2-worker uvicorn's peak for the same "
                       "kind of body (rows or entities), same run. server CPU ms/req: CPU time of the server's "
                       "processes (for the platform: every process of the Ray cluster) per request. other cores: "
                       "CPU used by processes other than the server and wrk (BUSY: >= "
                       f"{BUSY_CORES}). The uvicorn baseline ran with the Ray cluster stopped. "
                       f"Details: {args.out}"))
    trows = []
    for variant, checks in res["targets"].items():
        for name, t in checks.items():
            verdict = "-" if t["met"] is None else ("yes" if t["met"] else "NO")
            trows.append([variant, name, str(t["value"]), t["target"], verdict])
    h.print_table("Targets", [("platform", "left"), ("check", "left"), ("value", "right"),
                              ("target", "left"), ("met", "center")], trows)


# --- main ----------------------------------------------------------------------------------


def derived_spec(path: Path, overrides: list[str]) -> Path:
    spec = yaml.safe_load((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
    spec["model"].pop("search", None)
    spec["model"].update(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200})
    spec["evaluation"]["thresholds"] = []
    for item in overrides:
        key, _, value = item.partition("=")
        spec["deploy"][key.strip()] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def isolate_env(home: Path) -> None:
    """This process's environment is what the cluster, the CLI and the baseline inherit."""
    from mlplatform.runtime.local import free_port

    for key in [k for k in os.environ if k.startswith(("PLATFORM_", "RAY_"))]:
        os.environ.pop(key)
    os.environ.update(PLATFORM_HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                      RAY_AUTH_TOKEN_PATH=str(home / "ray" / "auth_token"), PLATFORM_SERVE_PORT=str(free_port()))


def run(args: argparse.Namespace, res: JsonDict, work: Path) -> None:
    from mlplatform.runtime.local import down
    from mlplatform.settings import load_settings

    home = work / "home"
    isolate_env(home)
    settings = load_settings()
    spec_path = derived_spec(work / "spec.yaml", args.deploy)
    url = f"{settings.serve_url}/{PIPELINE}/predict"
    print(f"cluster up (num_cpus=2), PLATFORM_HOME={home}", flush=True)
    res["cluster"] = {"default": cluster_up(settings, "off")}
    procs = ray_procs(settings)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    print("2 days of demo data, 2 pipeline runs (log: results/logs/serving-prepare.log) ...", flush=True)
    with open(LOG_DIR / "serving-prepare.log", "w") as log:
        rc = subprocess.run([sys.executable, __file__, "--prepare", str(work),
                             f"--rows-per-day={args.rows_per_day}"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"the pipeline runs failed: {h.tail(LOG_DIR / 'serving-prepare.log', 20)}")
    info = json.loads((work / "info.json").read_text())
    res["pipeline"] = {k: info[k] for k in ("runs", "versions", "champion", "features", "training_rows", "at")}
    print(f"  runs: {[(r['status'], r['seconds']) for r in info['runs']]}; versions {info['versions']}, "
          f"champion v{info['champion']}", flush=True)
    bodies = bodies_for(info)
    res["cold_start"] = {"default": cold_start(spec_path, url, bodies["rows"][0])}
    print(f"cold start: {res['cold_start']['default']}", flush=True)
    bodies["entities"] = check(url, bodies["entities"])
    lua = {k: write_lua(work / f"{k}.lua", v) for k, v in bodies.items()}
    answers = {k: post(url, bodies[k][0]).json()["predictions"][0]["score"] for k in ("rows", "entities")}
    for mode, s in platform_modes(url, ["rows", "entities", "keyed"], lua, spec_path, info, args, procs, "").items():
        res["series"][f"platform:{mode}"] = s
    began = time.monotonic()
    down(settings)
    res["baseline_ray"] = f"stopped ({time.monotonic() - began:.1f}s to stop) while the baseline ran"
    for workers in (1, 2):
        proc = None
        try:
            proc, port = start_uvicorn(workers, info["champion"], spec_path, LOG_DIR / f"serving-uvicorn-{workers}w.log")
            burl = f"http://127.0.0.1:{port}/{PIPELINE}/predict"
            for kind in ("rows", "entities"):
                got = post(burl, bodies[kind][0]).json()["predictions"][0]["score"]
                res["same_answers"][f"{kind}-{workers}w"] = abs(got - answers[kind]) < 1e-12
                res["series"][f"uvicorn-{workers}w:{kind}"] = series(f"uvicorn {workers}w {kind}", burl, lua[kind],
                                                                      args, tree(proc.pid))
        finally:
            stop(proc)
    if args.skip_fastpath:
        return
    try:
        print("cluster restart with PLATFORM_SERVE_FASTPATH=haproxy", flush=True)
        res["cluster"]["haproxy"] = cluster_up(settings, "haproxy")
        procs = ray_procs(settings)
        first = platformctl("serve", "deploy", str(spec_path), "--json")  # starts Serve on the new cluster
        if first.returncode != 0:
            raise RuntimeError(f"serve deploy failed: {(first.stderr or first.stdout)[-2000:]}")
        res["cold_start"]["haproxy"] = cold_start(spec_path, url, bodies["rows"][0])
        print(f"cold start (HAProxy): {res['cold_start']['haproxy']}", flush=True)
        modes = ["rows"] if args.quick else ["rows", "entities", "keyed"]
        for mode, s in platform_modes(url, modes, lua, spec_path, info, args, procs, " HAProxy").items():
            res["series"][f"platform-haproxy:{mode}"] = s
    except Exception as exc:  # recorded, and the report goes on without it
        res["errors"]["haproxy"] = f"{type(exc).__name__}: {exc}"[:3000]
        print(f"HAProxy fast path failed: {res['errors']['haproxy']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s per point, 1 and 32 connections")
    p.add_argument("--seconds", type=float, help="per point (default 10, quick 3)")
    p.add_argument("--connections", help="comma-separated (default 1,8,32,64; quick 1,32)")
    p.add_argument("--rows-per-day", type=int, default=2000)
    p.add_argument("--deploy", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the spec's deploy section (repeatable)")
    p.add_argument("--skip-fastpath", action="store_true", help="do not measure the HAProxy fast path")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare / "home", args.prepare / "spec.yaml", args.prepare / "info.json", args.rows_per_day)
        return 0
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = 1.0 if args.quick else 2.0
    args.connections = [int(c) for c in (args.connections or ("1,32" if args.quick else "1,8,32,64")).split(",")]
    res: JsonDict = {"benchmark": "serving", "machine": h.machine_info(), "series": {}, "errors": {},
                     "same_answers": {}, "packages": h.package_versions(
                         ["ray", "fastapi", "starlette", "uvicorn", "scikit-learn", "pandas", "numpy"]),
                     "config": {"model": "LogisticRegression(max_iter=200), demo pipeline features",
                                "seconds_per_point": args.seconds, "warmup_s": args.warmup,
                                "connections": args.connections, "deploy_overrides": args.deploy,
                                "bodies": N_BODIES, "wrk": "wrk -t1 --latency, closed loop, Lua request() "
                                "cycling pre-formatted bodies", "quick": args.quick}}
    work = Path(tempfile.mkdtemp(prefix="mlp-bench-serving-"))
    began = time.monotonic()
    try:
        run(args, res, work)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        res["errors"]["run"] = f"{type(exc).__name__}: {exc}"[:3000]
    finally:
        from mlplatform.runtime.local import down, read_state
        from mlplatform.settings import load_settings

        if os.environ.get("PLATFORM_HOME") == str(work / "home"):  # only the cluster of this run
            settings = load_settings()
            state = read_state(settings)
            down(settings)
            if state is not None:
                shutil.rmtree(state.temp_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - began, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["targets"] = {v: targets(res, v) for v in ("platform", "platform-haproxy")
                      if f"{v}:rows" in res["series"]}
    if res["series"]:
        print_report(res, args)
    h.write_json(args.out, res)
    print(f"results: {args.out} ({res['wall_s']:.0f}s)", flush=True)
    return 1 if "run" in res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
