"""Benchmark: online serving on Ray Serve (the platform's ingress) vs the same model on plain uvicorn.

    .venv/bin/python benchmarks/serving.py            # 10 s per point at 1, 8, 32, 64 connections
    .venv/bin/python benchmarks/serving.py --quick    # 3 s per point at 1 and 32 (smoke run)
    .venv/bin/python benchmarks/serving.py --deploy replicas=2 --deploy log_predictions=false

Under a throwaway PLATFORM_HOME on free ports: a local cluster (num_cpus=2), 2 days of demo data,
the demo pipeline run twice with LogisticRegression (no search, no thresholds: both versions
register). Then wrk (-t1, closed loop, a Lua script cycling 256 pre-formatted single-row bodies)
per connection count against the platform behind Serve's Python proxy (PLATFORM_SERVE_FASTPATH=
off): one version ({"rows": [training row]}), entity ids (the SQLite online store), and rows with
`customer_id` under a 90/10 split (sticky routing sees 256 entities); the baseline, FastAPI +
uvicorn with 1 and 2 workers (serving_baseline.py: same model, bodies and online lookup) with the
Ray cluster stopped; the platform again on a cluster restarted with PLATFORM_SERVE_FASTPATH=haproxy.
Cold start: after `serve down`, `platformctl serve deploy` to the first 200 (polled every 50 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import socket
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
ROOT, LOG_DIR, OUT_JSON = HERE.parent, HERE / "results" / "logs", HERE / "results" / "serving.json"
BIN = Path(sys.executable).parent
PIPELINE, N_BODIES, ROWS_PER_DAY, BUSY_CORES = "demo", 256, 2000, 0.25
TARGET_PEAK = 0.35  # platform peak 2xx req/s >= 0.35x uvicorn (2 workers)'s peak
TARGET_P50 = 3.0  # p50 at 1 connection <= 3x uvicorn (1 worker)'s
TARGET_NO_COLLAPSE = 0.9  # 2xx req/s at the most connections >= 90% of the peak
TARGET_SPLIT = 0.8  # 90/10 peak >= 0.8x the single-version peak
JsonDict = dict[str, Any]
Procs = Callable[[], list[psutil.Process]]


def prepare(work: Path) -> None:
    """The pipeline runs, in a child process: its Ray driver, threads and imports stay out of the
    parent, which only drives wrk. Writes what the load needs to info.json."""
    from mlplatform.artifacts import ModelVersion, TrainingSet
    from mlplatform.data.synthetic import DemoDataConfig, write_day
    from mlplatform.pipeline import run_pipeline
    from mlplatform.services import Services
    from mlplatform.serving.infra import json_value
    from mlplatform.settings import load_settings
    from mlplatform.spec_loader import load_spec
    from mlplatform.training.data import load_frame

    services, spec = Services(load_settings()), load_spec(work / "spec.yaml")
    cfg, runs = DemoDataConfig(days=2, rows_per_day=ROWS_PER_DAY, entities=1000), []
    for day in (1, 2):
        write_day(work / "home" / "demo" / "data", cfg, day)
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
    (work / "info.json").write_text(json.dumps({
        "runs": runs, "versions": versions, "champion": champion, "features": len(ts.features),
        "training_rows": len(df), "rows": rows, "entities": [str(e) for e in sample[ts.entity]],
        "at": df[ts.timestamp].max().isoformat()}))


def write_lua(path: Path, bodies: list[JsonDict]) -> Path:
    """A wrk script cycling through pre-formatted requests: a new body (and entity) per request
    at no per-request Lua cost beyond an index."""
    texts = ",\n".join(f"[==[{json.dumps(b)}]==]" for b in bodies)
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"local bodies = {{\n{texts}\n}}\nlocal reqs = {{}}\n"
                    "for i, b in ipairs(bodies) do reqs[i] = wrk.format(nil, nil, nil, b) end\n"
                    "local n = 0\nrequest = function() n = n % #reqs + 1; return reqs[n] end\n")
    return path


def parse_wrk(text: str) -> JsonDict:
    """Requests/sec, p50 / p99 (ms), request count, non-2xx and socket errors from wrk's text."""
    def lat(pct: str) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return round(float(m[1]) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[m[2]], 3) if m else None

    def num(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)) \
        if sock else {}
    return {"rps": num(r"Requests/sec:\s+([\d.]+)") or None, "p50_ms": lat("50"), "p99_ms": lat("99"),
            "requests": int(num(r"(\d+) requests in")), "socket_errors": errors,
            "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)")),
            "socket_errors_total": sum(errors.values())}


def _cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds and name of every process now."""
    out = {}
    for p in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            out[p.pid] = (sum(p.cpu_times()[:2]), p.info["name"])
    return out


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def run_point(url: str, lua: Path, conns: int, seconds: int, server: Procs) -> JsonDict:
    """One wrk run, with the CPU of the server's processes, of wrk and of everything else: on a
    shared 2-core machine the last says whether the point can be trusted."""
    mine, cpu0, busy0, ru0 = server(), _cpu(), _busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    proc = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                          capture_output=True, text=True, timeout=seconds + 60)
    span = time.monotonic() - began
    ru1, busy1, cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy(), _cpu()
    mine = {p.pid for p in [*mine, *server()]}
    delta = sorted(((v - cpu0.get(pid, (0.0,))[0], pid, name) for pid, (v, name) in cpu1.items()),
                   reverse=True)
    server_s = sum(d for d, pid, _ in delta if pid in mine)
    wrk_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    p = {"connections": conns, **parse_wrk(proc.stdout)}
    if proc.returncode != 0 or p["rps"] is None:
        p["error"] = (proc.stderr or proc.stdout)[-500:]
    ok = p["rps"] * (1 - p["non_2xx"] / p["requests"]) if p["rps"] and p["requests"] else None
    other = max(0.0, busy1 - busy0 - server_s - wrk_s)
    p.update(ok_rps=round(ok, 1) if ok else None, server_cores=round(server_s / span, 2),
             wrk_cores=round(wrk_s / span, 2), other_cores=round(other / span, 2),
             server_cpu_ms_per_req=round(1000 * server_s / p["requests"], 2) if p["requests"] else None,
             load_avg_1m=round(os.getloadavg()[0], 2),
             top_others=[f"{name} {d / span:.2f}" for d, pid, name in delta if pid not in mine][:3])
    return p


def series(label: str, url: str, lua: Path, args: argparse.Namespace, server: Procs) -> JsonDict:
    """A warm-up (not recorded), then one point per connection count."""
    run_point(url, lua, 8, args.warmup, server)
    points = []
    for c in args.connections:
        points.append(p := run_point(url, lua, c, args.seconds, server))
        print(f"  {label:<28} c={c:<3} {p['rps'] or 0:6.0f} req/s  p50 {p['p50_ms']}  p99 {p['p99_ms']} ms  "
              f"non-2xx {p['non_2xx']}  CPU {p['server_cpu_ms_per_req']} ms/req  other {p['other_cores']}")
    return {"label": label, "url": url, "points": points}


def platformctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN / "platformctl", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def post(url: str, body: JsonDict, session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(url, json=body, timeout=10)


def cold_start(spec_path: Path, url: str, body: JsonDict) -> JsonDict:
    """`serve down`, then `serve deploy` timed until the first 200 (polled every 50 ms)."""
    down = platformctl("serve", "down", PIPELINE)
    began = time.monotonic()
    proc = subprocess.Popen([BIN / "platformctl", "serve", "deploy", str(spec_path), "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, codes, session, deadline = None, {}, requests.Session(), began + 600
    while first is None and time.monotonic() < deadline and proc.poll() in (None, 0):
        if proc.returncode == 0:  # deployed: a 200 must come soon
            deadline = min(deadline, time.monotonic() + 30)
        try:
            code = str(post(url, body, session).status_code)
        except requests.RequestException:
            code = "no connection"
        codes[code] = codes.get(code, 0) + 1
        first = time.monotonic() - began if code == "200" else None
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    return {"first_200_s": round(first, 2) if first else None, "down_rc": down.returncode,
            "command_s": round(time.monotonic() - began, 2), "poll_codes": codes,
            "deploy": json.loads(out) if proc.returncode == 0 else (err or out)[-2000:]}


def start_uvicorn(workers: int, version: str, spec_path: Path) -> tuple[subprocess.Popen, str]:
    """The baseline in its own process group; returns once every worker has loaded the model."""
    from mlplatform.runtime.local import free_port

    port, log = free_port(), LOG_DIR / f"serving-uvicorn-{workers}w.log"
    env = {**os.environ, "BASELINE_MODEL_NAME": PIPELINE, "BASELINE_MODEL_VERSION": version,
           "BASELINE_SPEC": str(spec_path)}
    with open(log, "w") as f:
        proc = subprocess.Popen([BIN / "uvicorn", "--app-dir", str(HERE), "serving_baseline:app",
                                 "--host=127.0.0.1", f"--port={port}", f"--workers={workers}",
                                 "--log-level=info", "--no-access-log"],
                                cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 180
    while log.read_text().count("Application startup complete") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"uvicorn ({workers} workers) did not start: {h.tail(log, 15)}")
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}/{PIPELINE}/predict"


def stop(proc: subprocess.Popen | None) -> None:
    """Stop a server this script started (uvicorn's master stops its workers; else its group)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def cluster_up(res: JsonDict, key: str, settings: Any, fastpath: str) -> Procs:
    """(Re)start the local cluster with PLATFORM_SERVE_FASTPATH=`fastpath` (serve_env() reads it
    at `up`: Serve's settings are fixed when the head starts); returns its processes."""
    from mlplatform.runtime import local

    local.down(settings)
    os.environ["PLATFORM_SERVE_FASTPATH"] = fastpath
    began = time.monotonic()
    up = local.up(settings, num_cpus=2, port=local.free_port(), dashboard_port=local.free_port(),
                  object_store_mb=300)
    state = up.state
    res["cluster"][key] = {"seconds": round(time.monotonic() - began, 1), "message": up.message,
                           "fastpath": fastpath, "temp_dir": state.temp_dir}
    port = int(state.gcs_address.rsplit(":", 1)[1])
    return lambda: local.cluster_processes(state.temp_dir, port)


def platform(res: JsonDict, key: str, url: str, modes: list[str], ctx: JsonDict,
             args: argparse.Namespace, procs: Procs) -> None:
    """The platform's cold start and series: one version (rows, entities), then 90/10 (keyed rows)."""
    info, label = ctx["info"], key.replace("-", " ")
    res["cold_start"][key] = cold_start(ctx["spec"], url, ctx["bodies"]["rows"][0])
    print(f"cold start ({key}): {res['cold_start'][key]}", flush=True)
    if "lua" not in ctx:  # once: drop entity bodies the online store cannot answer (else non-2xx)
        session = requests.Session()
        ctx["bodies"]["entities"] = [b for b in ctx["bodies"]["entities"] if post(url, b, session).ok]
        ctx["lua"] = {k: write_lua(ctx["work"] / f"{k}.lua", v) for k, v in ctx["bodies"].items()}
        ctx["answers"] = {k: post(url, ctx["bodies"][k][0]).json()["predictions"][0]["score"]
                          for k in ("rows", "entities")}
    for mode in [m for m in ("rows", "entities") if m in modes]:
        res["series"][f"{key}:{mode}"] = series(f"{label} {mode}", url, ctx["lua"][mode], args, procs)
    if "keyed" in modes:
        other = next(v for v in info["versions"] if v != info["champion"])
        began = time.monotonic()
        split = platformctl("serve", "deploy", str(ctx["spec"]), f"--weight=v{info['champion']}=90",
                            f"--weight=v{other}=10", "--json")
        if split.returncode != 0:
            raise RuntimeError(f"serve deploy 90/10 failed: {(split.stderr or split.stdout)[-1500:]}")
        s = series(f"{label} 90/10 rows+id", url, ctx["lua"]["keyed"], args, procs)
        status = requests.get(url.rsplit("/", 1)[0] + "/status", timeout=10).json()
        res["series"][f"{key}:keyed"] = {**s, "deploy_s": round(time.monotonic() - began, 1),
                                         "deploy": json.loads(split.stdout),
                                         "replica_counts": status.get("counts")}


def baseline(res: JsonDict, ctx: JsonDict, args: argparse.Namespace) -> None:
    """uvicorn with 1 and 2 workers, each checked to answer as the platform did."""
    for workers in (1, 2):
        proc = None
        try:
            proc, url = start_uvicorn(workers, ctx["info"]["champion"], ctx["spec"])
            root = psutil.Process(proc.pid)

            def procs(root: psutil.Process = root) -> list[psutil.Process]:
                return [root, *root.children(recursive=True)]

            for kind in ("rows", "entities"):
                got = post(url, ctx["bodies"][kind][0]).json()["predictions"][0]["score"]
                res["same_answers"][f"{kind}-{workers}w"] = abs(got - ctx["answers"][kind]) < 1e-12
                res["series"][f"uvicorn-{workers}w:{kind}"] = series(f"uvicorn {workers}w {kind}", url,
                                                                     ctx["lua"][kind], args, procs)
        finally:
            stop(proc)


def port_block(n: int = 16) -> int:
    """The first of `n` consecutive ports nothing listens on. Ray gives direct-ingress replicas
    ports from fixed ranges (HTTP from 30000, gRPC from 40000) bound with SO_REUSEPORT: the
    replicas of two clusters on one machine then share a port and the kernel splits the
    connections between them (another cluster's replica answered this benchmark's requests
    and its infra validation). Each run takes ranges of its own (see the README)."""
    for _ in range(500):
        base, socks = random.randrange(20000, 29000), []
        try:
            for port in range(base, base + n):
                socks.append(sock := socket.socket())
                sock.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {n} free consecutive ports in 20000-29000")


def fastpath(res: JsonDict, ctx: JsonDict, settings: Any, url: str, args: argparse.Namespace) -> None:
    """The platform on a cluster restarted with PLATFORM_SERVE_FASTPATH=haproxy. A failure is
    recorded, with HAProxy's own alerts from the cluster's logs (Serve's message cuts them off)."""
    key = "platform-haproxy"
    try:
        print("cluster restart with PLATFORM_SERVE_FASTPATH=haproxy", flush=True)
        for kind in ("HTTP", "GRPC"):  # passed on to the cluster by `up` (its environment)
            if f"RAY_SERVE_DIRECT_INGRESS_MIN_{kind}_PORT" not in os.environ:
                base = port_block()
                os.environ[f"RAY_SERVE_DIRECT_INGRESS_MIN_{kind}_PORT"] = str(base)
                os.environ[f"RAY_SERVE_DIRECT_INGRESS_MAX_{kind}_PORT"] = str(base + 15)
        res["config"]["direct_ingress_ports"] = {k: v for k, v in os.environ.items() if "DIRECT_INGRESS" in k}
        procs = cluster_up(res, key, settings, "haproxy")
        first = platformctl("serve", "deploy", str(ctx["spec"]), "--json")  # starts Serve
        if first.returncode != 0:
            logs = [f for f in Path(res["cluster"][key]["temp_dir"]).rglob("*") if f.is_file()]
            alerts = {line[line.index("[ALERT]"):][:400] for f in logs
                      for line in f.read_text(errors="replace").splitlines() if "[ALERT]" in line}
            raise RuntimeError(f"serve deploy failed; HAProxy: {sorted(alerts)[:3]}; "
                               f"{(first.stderr or first.stdout)[-1500:]}")
        platform(res, key, url, ["rows"] if args.quick else ["rows", "entities", "keyed"], ctx, args, procs)
    except Exception as exc:  # recorded, and the report goes on without it
        res["errors"][key] = f"{type(exc).__name__}: {exc}"[:4000]
        print(f"{key} failed: {res['errors'][key][:600]}")


def _peak(s: JsonDict | None) -> float | None:
    """The peak of the 2xx rate: a server shedding load with fast 503s gets no credit for them."""
    rates = [p["ok_rps"] for p in (s or {}).get("points", []) if p.get("ok_rps")]
    return max(rates) if rates else None


def targets(res: JsonDict, key: str) -> JsonDict:
    """The issue's targets for one platform variant, against this run's baselines."""
    s, out = res["series"], {}
    plat, u1 = s.get(f"{key}:rows"), s.get("uvicorn-1w:rows")
    peak, u2peak, speak = _peak(plat), _peak(s.get("uvicorn-2w:rows")), _peak(s.get(f"{key}:keyed"))

    def verdict(name: str, value: float, target: float, higher: bool, **extra: Any) -> None:
        out[name] = {"value": round(value, 3), "target": f"{'>=' if higher else '<='} {target}",
                     "met": value >= target if higher else value <= target, **extra}

    def p50(series: JsonDict | None) -> float | None:
        return next((p["p50_ms"] for p in (series or {}).get("points", []) if p["connections"] == 1), None)

    if peak and u2peak:
        verdict("peak req/s vs uvicorn 2w peak", peak / u2peak, TARGET_PEAK, True)
    if p50(plat) and p50(u1):
        verdict("p50 @1 conn vs uvicorn 1w p50", p50(plat) / p50(u1), TARGET_P50, False,
                ms=[p50(plat), p50(u1)])
    if peak and (last := plat["points"][-1]).get("ok_rps"):
        verdict(f"req/s @{last['connections']} conns vs peak", last["ok_rps"] / peak, TARGET_NO_COLLAPSE,
                True)
    if speak and peak:
        verdict("90/10 peak vs single-version peak", speak / peak, TARGET_SPLIT, True)
    cold = res["cold_start"].get(key, {}).get("first_200_s")
    out["cold start s (deploy to first 200)"] = {"value": cold, "target": "reported", "met": None}
    return out


def print_report(res: JsonDict, args: argparse.Namespace) -> None:
    from rich.markup import escape

    rows = []
    for key, s in res["series"].items():
        ref = _peak(res["series"].get("uvicorn-2w:" + ("entities" if key.endswith(":entities") else "rows")))
        for p in s["points"]:
            sock = f" +{p['socket_errors_total']} sock" if p["socket_errors_total"] else ""
            rows.append([escape(s["label"]), str(p["connections"]), h.fmt_int(p.get("rps")),
                         h.fmt_float(p.get("p50_ms")), h.fmt_float(p.get("p99_ms")),
                         h.fmt_int(p["non_2xx"]) + sock,
                         f"{p['ok_rps'] / ref:.2f}x" if p.get("ok_rps") and ref else "-",
                         h.fmt_float(p.get("server_cpu_ms_per_req")),
                         f"{p['other_cores']:.2f}" + (" BUSY" if p["other_cores"] >= BUSY_CORES else "")])
    h.print_table(
        escape(f"Serving {res['config']['model']}: single-row JSON, wrk -t1, {args.seconds}s per point, "
               f"{res['machine']['cpu_count_logical']} CPUs"),
        [("server / mode", "left")] + [(c, "right") for c in ("conns", "req/s", "p50 ms", "p99 ms", "non-2xx",
                                                               "x uvicorn-2w peak", "server CPU ms/req",
                                                               "other cores")], rows,
        caption=escape("x uvicorn-2w peak: 2xx req/s over the 2-worker uvicorn's peak for the same kind "
                       "of body, same run. server CPU ms/req: CPU time of the server's processes (the "
                       "platform: its whole Ray cluster) per request. other cores: CPU used by other "
                       f"processes than the server and wrk (BUSY: >= {BUSY_CORES}). uvicorn ran with the Ray "
                       f"cluster stopped. {args.out}"))
    trows = [[key, name, str(t["value"]), t["target"], {None: "-", True: "yes", False: "NO"}[t["met"]]]
             for key, checks in res["targets"].items() for name, t in checks.items()]
    h.print_table("Targets", [("platform", "left"), ("check", "left"), ("value", "right"),
                              ("target", "left"), ("met", "center")], trows)


def derived_spec(path: Path, overrides: list[str]) -> Path:
    """demo.yaml with the issue's model: LogisticRegression, no search, no gate thresholds."""
    spec = yaml.safe_load((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
    spec["model"].pop("search", None)
    spec["model"].update(estimator="sklearn.linear_model.LogisticRegression", params={"max_iter": 200})
    spec["evaluation"]["thresholds"] = []
    for item in overrides:
        key, _, value = item.partition("=")
        spec["deploy"][key.strip()] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(args: argparse.Namespace, res: JsonDict, work: Path) -> None:
    from mlplatform.runtime.local import down, free_port
    from mlplatform.settings import load_settings

    # This process's environment is what the cluster, the CLI and the baseline inherit.
    for key in [k for k in os.environ if k.startswith(("PLATFORM_", "RAY_")) and "RAY_SERVE_" not in k]:
        os.environ.pop(key)
    home = work / "home"
    os.environ.update(PLATFORM_HOME=str(home), RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
                      RAY_AUTH_TOKEN_PATH=str(home / "ray" / "auth_token"),
                      PLATFORM_SERVE_PORT=str(free_port()))
    res["config"]["ray_serve_env"] = {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")}
    settings, spec = load_settings(), derived_spec(work / "spec.yaml", args.deploy)
    url = f"{settings.serve_url}/{PIPELINE}/predict"
    print(f"cluster up (num_cpus=2), PLATFORM_HOME={home}", flush=True)
    procs = cluster_up(res, "platform-proxy", settings, "off")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    print("2 days of demo data, 2 pipeline runs (log: results/logs/serving-prepare.log) ...", flush=True)
    with open(LOG_DIR / "serving-prepare.log", "w") as log:
        rc = subprocess.run([sys.executable, __file__, "--prepare", str(work)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"the pipeline runs failed: {h.tail(LOG_DIR / 'serving-prepare.log', 20)}")
    info = json.loads((work / "info.json").read_text())
    res["pipeline"] = {k: v for k, v in info.items() if k not in ("rows", "entities")}
    print(f"  runs {[(r['status'], r['seconds']) for r in info['runs']]}; versions {info['versions']}, "
          f"champion v{info['champion']}", flush=True)
    rows, ents = info["rows"], info["entities"]
    bodies = {"rows": [{"rows": [r]} for r in rows],
              "keyed": [{"rows": [{**r, "customer_id": e}]} for r, e in zip(rows, ents, strict=True)],
              "entities": [{"entities": [e], "at": info["at"]} for e in ents]}
    ctx = {"info": info, "spec": spec, "bodies": bodies, "work": work}
    platform(res, "platform-proxy", url, ["rows", "entities", "keyed"], ctx, args, procs)
    res["config"]["entity_bodies_answered"] = len(bodies["entities"])
    began = time.monotonic()
    down(settings)
    res["baseline_note"] = f"Ray cluster stopped ({time.monotonic() - began:.1f}s) while uvicorn ran"
    baseline(res, ctx, args)
    if not args.skip_fastpath:
        fastpath(res, ctx, settings, url, args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s per point, 1 and 32 connections")
    p.add_argument("--seconds", type=int, help="per point (default 10, quick 3)")
    p.add_argument("--connections", help="comma-separated (default 1,8,32,64; quick 1,32)")
    p.add_argument("--deploy", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the spec's deploy section (repeatable)")
    p.add_argument("--skip-fastpath", action="store_true", help="no HAProxy fast path")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    args.seconds, args.warmup = args.seconds or (3 if args.quick else 10), 1 if args.quick else 2
    args.connections = [int(c) for c in (args.connections or ("1,32" if args.quick else "1,8,32,64"))
                        .split(",")]
    res: JsonDict = {
        "benchmark": "serving", "machine": h.machine_info(), "series": {}, "cold_start": {}, "cluster": {},
        "errors": {}, "same_answers": {},
        "packages": h.package_versions(["ray", "fastapi", "starlette", "uvicorn", "scikit-learn", "pandas"]),
        "config": {"model": "LogisticRegression(max_iter=200) on the demo pipeline's features",
                   "seconds_per_point": args.seconds, "warmup_s": args.warmup,
                   "connections": args.connections,
                   "deploy_overrides": args.deploy, "bodies": N_BODIES, "quick": args.quick,
                   "wrk": "wrk -t1 --latency, closed loop, Lua request() cycling pre-formatted bodies"}}
    work = Path(tempfile.mkdtemp(prefix="mlp-bench-serving-"))
    began = time.monotonic()
    try:
        run(args, res, work)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        res["errors"]["run"] = f"{type(exc).__name__}: {exc}"[:4000]
    finally:  # only this run's cluster (named by its PLATFORM_HOME) and files
        from mlplatform.runtime.local import down
        from mlplatform.settings import load_settings

        if os.environ.get("PLATFORM_HOME") == str(work / "home"):
            down(load_settings())
        for c in res["cluster"].values():
            shutil.rmtree(c["temp_dir"], ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - began, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["targets"] = {k.split(":")[0]: targets(res, k.split(":")[0]) for k in res["series"]
                      if k.startswith("platform") and k.endswith(":rows")}
    if res["series"]:
        print_report(res, args)
    h.write_json(args.out, res)
    print(f"results: {args.out} ({res['wall_s']:.0f}s)", flush=True)
    return 1 if "run" in res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
