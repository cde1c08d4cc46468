"""Benchmark: a soak. Inference load on the demo pipeline's served champion for a long stretch, with
a pipeline run every few minutes and a traffic change in the middle.

    .venv/bin/python benchmarks/soak.py                      # 10 minutes, a run every 2m (~13 min in all)
    .venv/bin/python benchmarks/soak.py --quick              # 2 minutes, a run every 1m (smoke run, ~4-5 min)
    .venv/bin/python benchmarks/soak.py --minutes 30 --every 5m

Under a throwaway PLATFORM_HOME on free ports (benchmarks/_demo_env.py): a local cluster
(num_cpus=2) and the demo pipeline with the rollout benchmark's model and canary plan. Day 1 trains
the first champion (served directly, no load). Then 2 Replay clients (mlplatform.serving.replay)
send one holdout row per request for `--minutes`; every `--every` a pipeline run (a child process)
ingests a fresh synthetic day, retrains, gates, and canaries what passes (the runner promotes or
rolls it back; the run counts as finished when its rollout is settled); in the middle, the traffic
moves to the previous version and back through `mlplatform.serving.deployer.change`. Measured:
requests and errors (by status and kind), p50/p99 per window, the runs, the failures around the
traffic change, and the memory (RSS/USS) and CPU of every Ray process by role at the start and at
the end of the load. The baseline is the run's own start: the first window and the start figures
against the last window and the end figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import requests

try:
    import _demo_env as env
    import _harness as h
except ImportError:  # run as `python -m benchmarks.soak`
    from benchmarks import _demo_env as env
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "results" / "soak.json"
NAME, CLIENTS = env.NAME, 2
JsonDict = dict[str, Any]


# --- what the clients saw ----------------------------------------------------------------------


class RequestLog:
    """Every /predict request the Replay clients send: (start, seconds, status, kind).

    Replay counts statuses but keeps no latencies and exposes no per-request hook, so while this
    is entered `requests.Session.send` is wrapped: calls from Replay's threads (named `replay-*`)
    to a /predict URL are timed (the body is read inside `send`), all others pass through. `kind`
    is the exception's type for no answer (status 0) and the body's start for a non-200.
    """

    def __init__(self) -> None:
        self.records: list[tuple[float, float, int, str]] = []
        self._original: Any = None

    def __enter__(self) -> RequestLog:
        original = self._original = requests.Session.send
        records = self.records

        def send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            if not (threading.current_thread().name.startswith("replay-") and
                    str(request.url).endswith("/predict")):
                return original(session, request, **kwargs)
            began, t0 = time.time(), time.perf_counter()
            try:
                resp = original(session, request, **kwargs)
            except Exception as exc:
                records.append((began, time.perf_counter() - t0, 0, type(exc).__name__))
                raise
            kind = "" if resp.status_code == 200 else " ".join(resp.text.split())[:90]
            records.append((began, time.perf_counter() - t0, resp.status_code, kind))
            return resp

        requests.Session.send = send  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        requests.Session.send = self._original  # type: ignore[method-assign]


class MemoryWatch(threading.Thread):
    """Every `every` seconds, the cluster's processes: their RSS/USS by role (a few ms a process)."""

    def __init__(self, cluster: JsonDict, every: float):
        super().__init__(name="memory-watch", daemon=True)
        self.cluster, self.every = cluster, every
        self.samples: list[JsonDict] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            rows = h.process_memory(env.cluster_processes(self.cluster))
            roles = h.memory_by_role(rows)
            self.samples.append({"t": time.time(), "processes": len(rows),
                                 "rss_mb": round(sum(r["rss_mb"] for r in rows), 1),
                                 "uss_mb": round(sum(r["uss_mb"] for r in rows), 1),
                                 "by_role_uss_mb": {k: v["uss_mb"] for k, v in roles.items()}})


# --- the pipeline runs and the traffic change --------------------------------------------------


def pipeline_run(ctx: JsonDict, day: int, scheduled: float) -> JsonDict:
    """Day `day`'s run in a child process, then its rollout until settled (if it started one)."""
    from mlplatform.rollout.store import RolloutStore

    store, t0 = RolloutStore(ctx["services"].metadata), ctx["t0"]
    previous = store.latest(NAME)
    began = time.time()
    print(f"[{began - t0:6.1f}s] day {day}: pipeline run ...", flush=True)
    ctx["current"] = env.DayRun(ctx["work"], day, env.LOG_DIR / f"soak-day{day}.log")
    report = ctx["current"].wait()
    ctx["current"] = None
    ran = time.time()
    steps = report.get("steps", {})
    out: JsonDict = {"day": day, "start_s": round(began - t0, 1), "late_s": round(began - scheduled, 1),
                     "pipeline_s": round(ran - began, 1), "status": report["status"],
                     "gate": steps.get("evaluate", ["-", 0, "-"])[2],
                     "rollout_step": steps.get("rollout", ["-", 0, "-"])[2],
                     "driver_peak_rss_mb": report["driver_peak_rss_mb"], "log": report["log"]}
    if "error" in report:
        out["error"] = report["error"][-600:]
    state = store.latest(NAME)
    rollout: JsonDict | None = None
    if state is not None and (previous is None or state.id != previous.id):
        try:
            state, settled_at = env.wait_settled(store, state.id, timeout_s=max(180, 40 * ctx["interval"]))
            rollout = {"id": state.id, "challenger": state.challenger, "champion": state.champion,
                       "status": state.status, "reason": state.reason[:200],
                       "start_s": round(env.epoch(state.started_at) - t0, 1),
                       "settled_s": round(settled_at - t0, 1),
                       "duration_s": round(settled_at - env.epoch(state.started_at), 1)}
        except RuntimeError as exc:
            rollout = {"id": state.id, "status": state.status, "error": str(exc)[:300]}
    ended = time.time()
    out.update(rollout=rollout, end_s=round(ended - t0, 1), total_s=round(ended - began, 1))
    out["outcome"] = outcome(out)
    print(f"[{ended - t0:6.1f}s] day {day}: {out['outcome']} ({out['total_s']}s)", flush=True)
    return out


def outcome(run: JsonDict) -> str:
    if run["status"] != "SUCCEEDED":
        return f"{run['status']}: {(run.get('error') or run['gate'])[:120]}"
    r = run["rollout"]
    if r is None:
        return "no rollout: " + (run["gate"] if "accepted" not in run["gate"] else run["rollout_step"])[:120]
    return f"v{r.get('challenger', '?')} {r['status']}" + (" (not settled)" if "error" in r else "")


def traffic_change(ctx: JsonDict, hold_s: float) -> JsonDict:
    """The champion's traffic moved to the previous version (kept deployed at weight 0 for a
    rollback; staged and infra-validated if it was dropped) for `hold_s`, then back."""
    from mlplatform.serving.client import ServeControl
    from mlplatform.serving.deployer import change

    services, spec, t0, replay = ctx["services"], ctx["spec"], ctx["t0"], ctx["replay"]
    champion = services.models.champion(NAME)
    app = ServeControl(services.settings).app(NAME)
    live = [s.version for s in app.config.versions] if app and app.config else []
    older = sorted((v for v in live if v != champion and v.isdigit() and int(v) < int(champion)), key=int)
    target = older[-1] if older else str(int(champion) - 1)
    print(f"[{time.time() - t0:6.1f}s] traffic change: v{champion} 100% -> v{target} 100% for {hold_s:.0f}s "
          f"(live: {live})", flush=True)
    out: JsonDict = {"champion": champion, "moved_to": target, "live_before": live}
    a0 = a1 = b0 = time.time()
    try:
        first = change(services, spec, weights={target: 100}, champion=champion)
        a1 = time.time()
        seen = Counter(replay.stats.versions)
        time.sleep(hold_s)
        out["rows_by_version_while_moved"] = dict(Counter(replay.stats.versions) - seen)
        out["messages"] = [first.message]
    except Exception as exc:  # noqa: BLE001 - a refused change is a result; the traffic goes back
        out["error"] = f"{type(exc).__name__}: {exc}"[:600]
    b0 = time.time()
    back = change(services, spec, weights={champion: 100}, champion=champion)
    b1 = time.time()
    print(f"[{b1 - t0:6.1f}s] traffic back on v{champion}" + (f" ({out['error']})" if "error" in out else ""),
          flush=True)
    out.update(moved_at_s=round(a0 - t0, 1), move_applied_s=round(a1 - a0, 2), back_at_s=round(b0 - t0, 1),
               back_applied_s=round(b1 - b0, 2), held_s=round(b0 - a1, 1))
    out.setdefault("messages", []).append(back.message)
    return out


# --- the soak --------------------------------------------------------------------------------


def soak(args: argparse.Namespace, res: JsonDict, live: JsonDict, work: Path) -> None:
    """`live`: what the cleanup and the figures need (the context, the request log), not JSON."""
    from mlplatform.services import Services
    from mlplatform.serving.replay import Replay, holdout_rows
    from mlplatform.spec import PipelineSpec

    settings, res["cluster"] = env.start(work, fastpath=args.fastpath)
    raw = env.demo_spec(env.canary_plan(args.interval), keep_previous=f"{args.every}s",
                        evaluation={"require_better_than_champion": False})
    env.write_config(work, raw, args.rows_per_day)
    services = Services(settings)
    ctx: JsonDict = {"work": work, "services": services, "spec": PipelineSpec.model_validate(raw),
                     "interval": args.interval, "current": None, "t0": time.time()}
    live["ctx"] = ctx
    print("day 1: the first champion (no load; log: results/logs/soak-day1.log) ...", flush=True)
    res["day1"] = first = pipeline_run(ctx, 1, time.time())
    champion = services.models.champion(NAME)
    if first["status"] != "SUCCEEDED" or champion is None:
        raise RuntimeError(f"day 1 served nothing: {first['outcome']} ({first.get('error', '')})")
    rows, labels = holdout_rows(services, NAME, champion)
    res["memory"] = {"start": h.process_memory(env.cluster_processes(res["cluster"]))}
    watch = MemoryWatch(res["cluster"], args.window)
    duration, runs = args.minutes * 60, res["runs"]
    with RequestLog() as live["log"]:
        ctx["t0"] = t0 = time.time()
        ctx["replay"] = replay = Replay(f"{settings.serve_url}/{NAME}", rows, labels, clients=CLIENTS,
                                        rate_per_client=args.rate or None).start()
        watch.start()
        try:
            # The first run after the first window: that window is the quiet baseline.
            next_run, change_at, day = t0 + min(args.window, args.every / 2), t0 + duration / 2, 2
            while time.time() < t0 + duration:
                now = time.time()
                if change_at is not None and now >= change_at:
                    res["traffic_change"] = traffic_change(ctx, args.hold)
                    change_at = None
                elif now >= next_run:
                    runs.append(pipeline_run(ctx, day, next_run))
                    day, next_run = day + 1, next_run + args.every
                else:
                    time.sleep(0.25)
        finally:
            stats, ended = replay.stop(), time.time()
            watch.stop_event.set()
            watch.join(timeout=30)
    res["replay"] = env.replay_summary(stats, t0, ended)
    res["memory"]["end"] = h.process_memory(env.cluster_processes(res["cluster"]))
    res["memory"]["windows"] = [{**s, "t": round(s["t"] - t0, 1)} for s in watch.samples]
    res["load_s"] = round(ended - t0, 1)


# --- figures ---------------------------------------------------------------------------------


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if len(values) else None


def figures(res: JsonDict, live: JsonDict, window: float) -> None:
    """Requests, errors and latency per window, from the clients' records; events per window."""
    t0, log = live["ctx"]["t0"], live["log"]
    rec = log.records
    t = np.array([r[0] - t0 for r in rec]) if rec else np.zeros(0)
    lat = np.array([r[1] for r in rec]) if rec else np.zeros(0)
    ok = np.array([r[2] == 200 for r in rec], dtype=bool)
    kinds = Counter(f"{r[2]} {r[3]}".strip() for r in rec if r[2] != 200)
    res["requests"] = {"sent": len(rec), "ok": int(ok.sum()), "errors": len(rec) - int(ok.sum()),
                       "errors_by_status_kind": dict(kinds.most_common()),
                       "p50_ms": pct(lat[ok], 50), "p99_ms": pct(lat[ok], 99),
                       "rate_per_s": round(len(rec) / res["load_s"], 1) if res.get("load_s") else None,
                       "failures": [{"at_s": round(r[0] - t0, 2), "status": r[2], "kind": r[3],
                                     "ms": round(r[1] * 1000, 1)} for r in rec if r[2] != 200][:100]}
    spans = [(r["start_s"], r["start_s"] + r["pipeline_s"], f"run d{r['day']}") for r in res["runs"]]
    spans += [(r["rollout"]["start_s"], r["rollout"]["settled_s"], f"canary v{r['rollout']['challenger']}")
              for r in res["runs"] if r.get("rollout") and "settled_s" in r["rollout"]]
    tc = res.get("traffic_change")
    if tc:
        spans.append((tc["moved_at_s"], tc["back_at_s"] + tc["back_applied_s"],
                      f"traffic -> v{tc['moved_to']}"))
    mem = res["memory"].get("windows", [])
    out = []
    for k in range(int(np.ceil(max(t.max() if len(t) else 0, res.get("load_s", 0)) / window))):
        a, b = k * window, (k + 1) * window
        sel = (t >= a) & (t < b)
        near = [m for m in mem if a < m["t"] <= b + window / 2]
        load_s = res.get("load_s", b)
        out.append({"from_s": a, "to_s": min(b, round(load_s, 1)), "full": b <= load_s,
                    "requests": int(sel.sum()), "errors": int((sel & ~ok).sum()),
                    "p50_ms": pct(lat[sel & ok], 50), "p99_ms": pct(lat[sel & ok], 99),
                    "max_ms": round(float(lat[sel].max()) * 1000, 1) if sel.any() else None,
                    "events": [name for s, e, name in spans if s < b and e >= a],
                    "cluster_uss_mb": near[0]["uss_mb"] if near else None,
                    "cluster_processes": near[0]["processes"] if near else None})
    res["windows"] = out
    if tc:  # failed requests around the change: 10 s either side, against the 30 s before it
        a, b = tc["moved_at_s"] - 10, tc["back_at_s"] + tc["back_applied_s"] + 10
        around, before = (t >= a) & (t <= b), (t >= a - 30) & (t < a)
        tc["around"] = {"from_s": round(a, 1), "to_s": round(b, 1), "requests": int(around.sum()),
                        "errors": int((around & ~ok).sum()), "p99_ms": pct(lat[around & ok], 99)}
        tc["before_30s"] = {"requests": int(before.sum()), "errors": int((before & ~ok).sum()),
                            "p99_ms": pct(lat[before & ok], 99)}
    start, end = (h.memory_by_role(res["memory"].get(k, [])) for k in ("start", "end"))
    res["memory"]["by_role"] = {key: {"start": start.get(key), "end": end.get(key),
                                      **{f"{m}_growth_mb": growth(start.get(key), end.get(key), m)
                                         for m in ("uss", "rss")}}
                                for key in sorted(set(start) | set(end))}
    for m in ("uss", "rss"):
        res["memory"][f"total_{m}_mb"] = {k: round(sum(v[f"{m}_mb"] for v in g.values()), 1)
                                          for k, g in (("start", start), ("end", end))}


def growth(a: JsonDict | None, b: JsonDict | None, m: str) -> float:
    return round((b or {}).get(f"{m}_mb", 0.0) - (a or {}).get(f"{m}_mb", 0.0), 1)


# --- report ----------------------------------------------------------------------------------


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def print_report(res: JsonDict, args: argparse.Namespace) -> None:
    from rich.markup import escape

    req, win, mach = res.get("requests", {}), res.get("windows", []), res["machine"]
    cfg = res["config"]
    head = (f"{cfg['minutes']:g} min of load, {CLIENTS} clients x {cfg['rate_per_client'] or 'closed loop'} "
            f"req/s, a pipeline run every {cfg['every_s']:.0f}s, {mach['cpu_count_logical']} CPUs")
    full = [w for w in win if w["full"]] or win  # the last window may be cut short by the end
    first, last = (full[0], full[-1]) if full else ({}, {})
    rows = [["requests sent / answered 200", f"{req.get('sent', 0):,} / {req.get('ok', 0):,}",
             f"{req.get('rate_per_s', '-')} req/s"],
            ["p50 / p99 ms, whole run", f"{ms(req.get('p50_ms'))} / {ms(req.get('p99_ms'))}", ""],
            ["p50 / p99 ms, first window -> last window",
             f"{ms(first.get('p50_ms'))} / {ms(first.get('p99_ms'))} -> "
             f"{ms(last.get('p50_ms'))} / {ms(last.get('p99_ms'))}", f"{args.window:.0f}-s windows"]]
    for kind, n in req.get("errors_by_status_kind", {}).items():
        when = [f"{f['at_s']:.0f}s" for f in req.get("failures", [])
                if f"{f['status']} {f['kind']}".strip() == kind]
        more = " ..." if len(when) > 8 else ""
        rows.append(["errors: " + kind, f"{n:,}", "at " + ", ".join(when[:8]) + more])
    if not req.get("errors_by_status_kind"):
        rows.append(["errors", "0", ""])
    rows.append(["pipeline runs", str(len(res["runs"])),
                 "; ".join(f"d{r['day']}: {r['outcome']}" for r in res["runs"])])
    tc = res.get("traffic_change")
    if tc and "around" in tc:
        rows.append([f"traffic change v{tc['champion']} -> v{tc['moved_to']} -> back at "
                     f"{tc['moved_at_s']:.0f}s: failed requests around it (+-10 s)",
                     f"{tc['around']['errors']} of {tc['around']['requests']}",
                     f"30 s before: {tc['before_30s']['errors']} of {tc['before_30s']['requests']}"])
    mem = res.get("memory", {})
    for m in ("uss", "rss"):
        tot = mem.get(f"total_{m}_mb")
        if tot:
            rows.append([f"Ray processes, {m.upper()} MB start -> end",
                         f"{tot['start']:,.0f} -> {tot['end']:,.0f} ({tot['end'] - tot['start']:+,.0f})", ""])
    load = (mach["load_avg_at_start"][0], mach.get("load_avg_at_end", ["-"])[0])
    rows.append(["machine", f"{mach['cpu_count_logical']} CPUs, {mach['memory_total_mb']:,} MB",
                 f"1-min load {load[0]} at start, {load[1]} at end"])
    caption = escape(f"baseline beside it: this run's own first {args.window:.0f}-s window and start figures "
                     f"against its last window and end figures. {args.out}")
    h.print_table(escape(f"Soak: {head}"), [("measure", "left"), ("measured", "right"), ("note", "left")],
                  [[escape(str(c)) for c in r] for r in rows], caption=caption)
    if win:
        h.print_table(escape(f"Latency over time ({args.window:.0f}-s windows; baseline: the first against "
                             "the last)"),
                      [("window s", "right"), ("requests", "right"), ("errors", "right"), ("p50 ms", "right"),
                       ("p99 ms", "right"), ("max ms", "right"), ("cluster USS MB", "right"),
                       ("procs", "right"), ("events", "left")],
                      [[f"{w['from_s']:.0f}-{w['to_s']:.0f}" + ("" if w["full"] else " (cut)"),
                        f"{w['requests']:,}", str(w["errors"]),
                        ms(w["p50_ms"]), ms(w["p99_ms"]), ms(w["max_ms"]), ms(w["cluster_uss_mb"]),
                        str(w["cluster_processes"] or "-"), escape(", ".join(w["events"]))] for w in win])
    if res["runs"]:
        h.print_table("Pipeline runs (a fresh synthetic day each; the run ends when its rollout settles)",
                      [("day", "right"), ("start s", "right"), ("late s", "right"), ("pipeline s", "right"),
                       ("total s", "right"), ("driver peak RSS MB", "right"), ("outcome", "left")],
                      [[str(r["day"]), f"{r['start_s']:.0f}", f"{r['late_s']:.0f}", f"{r['pipeline_s']:.0f}",
                        f"{r['total_s']:.0f}", ms(r["driver_peak_rss_mb"]), escape(r["outcome"])]
                       for r in res["runs"]])
    if mem.get("by_role"):
        h.print_table("Memory of the Ray processes by role (baseline: start, after day 1 and before the "
                      "load, against end, after the load)",
                      [("role", "left"), ("procs", "right"), ("RSS MB", "right"), ("RSS growth", "right"),
                       ("USS MB", "right"), ("USS growth", "right"), ("CPU s used", "right")],
                      [role_row(k, v) for k, v in mem["by_role"].items()] + drivers(res["runs"]),
                      caption="USS: pages only that process maps (what it would give back); RSS counts "
                              "shared pages in each process. '-': the role was not there then.")


def drivers(runs: list[JsonDict]) -> list[list[str]]:
    """The pipeline runs' drivers (child processes, not the cluster's): peak RSS, first run -> last."""
    if not runs:
        return []
    a, b = runs[0]["driver_peak_rss_mb"], runs[-1]["driver_peak_rss_mb"]
    return [[f"pipeline driver (child process; peak RSS, day {runs[0]['day']} -> {runs[-1]['day']})",
             f"{len(runs)} runs", f"{ms(a)} -> {ms(b)}", f"{b - a:+.1f}", "-", "-", "-"]]


def role_row(key: str, v: JsonDict) -> list[str]:
    from rich.markup import escape

    a, b = v["start"] or {}, v["end"] or {}

    def pair(k: str) -> str:
        return f"{ms(a.get(k))} -> {ms(b.get(k))}"

    cpu = b["cpu_s"] - a["cpu_s"] if a and b else None
    return [escape(key), f"{a.get('processes', 0)} -> {b.get('processes', 0)}", pair("rss_mb"),
            f"{v['rss_growth_mb']:+.1f}", pair("uss_mb"), f"{v['uss_growth_mb']:+.1f}", ms(cpu)]


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, help="how long the load runs (default 10; quick 2)")
    p.add_argument("--every", help="a pipeline run this often, e.g. 2m (default 2m; quick 1m)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 minutes, a run every 1m, 600 rows "
                   "a day, canary interval 3s, the traffic change held 10s")
    p.add_argument("--rate", type=float, default=20.0,
                   help="requests/s per client (default 20; 0: closed loop, as fast as answered)")
    p.add_argument("--interval", help="the canary's check interval (default 5s; quick 3s)")
    p.add_argument("--rows-per-day", type=int, help="demo events a day (default 1500; quick 600)")
    p.add_argument("--hold", help="how long the traffic stays moved (default 30s; quick 10s)")
    p.add_argument("--window", type=float, default=30.0,
                   help="latency and memory window, seconds (default 30)")
    p.add_argument("--fastpath", default="auto", choices=["auto", "off", "haproxy"],
                   help="PLATFORM_SERVE_FASTPATH for the cluster (default auto: the platform's default, "
                        "HAProxy when installed)")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(argv)
    from mlplatform.spec_types import duration_seconds

    def seconds(option: str, value: str) -> int:
        try:
            return duration_seconds(value if value[-1].isalpha() else f"{value}s")
        except (ValueError, KeyError, IndexError):
            p.error(f"{option} {value!r}: expected a duration such as 30s, 2m or 1h")

    args.minutes = args.minutes or (2.0 if args.quick else 10.0)
    args.every = seconds("--every", args.every or ("1m" if args.quick else "2m"))
    args.interval = seconds("--interval", args.interval or ("3s" if args.quick else "5s"))
    args.hold = seconds("--hold", args.hold or ("10s" if args.quick else "30s"))
    if args.minutes <= 0 or args.every <= 0 or args.window <= 0:
        p.error("--minutes, --every and --window must be positive")
    args.rows_per_day = args.rows_per_day or (600 if args.quick else 1500)
    res: JsonDict = {
        "benchmark": "soak", "machine": h.machine_info(), "errors": {}, "runs": [],
        "packages": h.package_versions(["ray", "scikit-learn", "pandas"]),
        "config": {"minutes": args.minutes, "every_s": args.every, "interval_s": args.interval,
                   "hold_s": args.hold, "window_s": args.window, "rows_per_day": args.rows_per_day,
                   "clients": CLIENTS, "rate_per_client": args.rate or None, "fastpath": args.fastpath,
                   "quick": args.quick, "plan": env.canary_plan(args.interval)}}
    work, live = Path(tempfile.mkdtemp(prefix="mlp-bench-soak-")), {}
    began, rc = time.monotonic(), 0
    env.sigterm_as_interrupt()
    try:
        soak(args, res, live, work)
    except KeyboardInterrupt:
        res["errors"]["run"], rc = "interrupted", 130
        print("interrupted: stopping the cluster ...", flush=True)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        res["errors"]["run"], rc = f"{type(exc).__name__}: {exc}"[:4000], 1
    finally:  # only this run's pipeline child, cluster (named by its temp dir) and files
        current = (live.get("ctx") or {}).get("current")
        if current is not None:
            current.kill()
        env.stop(work, res.get("cluster"))
    res["wall_s"] = round(time.monotonic() - began, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if live.get("log") is not None and res.get("memory"):
        figures(res, live, args.window)
        print_report(res, args)
    h.write_json(args.out, res)
    print(f"results: {args.out} ({res['wall_s']:.0f}s)", flush=True)
    return rc


if __name__ == "__main__":
    import sys

    sys.exit(main())
