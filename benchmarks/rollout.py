"""Benchmark: progressive delivery (canary rollouts) under continuous load.

    .venv/bin/python benchmarks/rollout.py                   # interval 5s, 1,500 rows a day (~3 min)
    .venv/bin/python benchmarks/rollout.py --quick           # interval 3s, 600 rows a day (smoke run)
    .venv/bin/python benchmarks/rollout.py --interval 10s --rate 0   # closed-loop clients

Under a throwaway PLATFORM_HOME on free ports: a local cluster (num_cpus=2) and the demo pipeline
with `deploy.rollout.strategy: canary` (steps 10 -> 50, `--interval`, failure_limit 2). Day 1 trains
the champion (served directly). With 2 Replay clients sending one row per request (the labels fed
back) the whole time, day 2 trains a healthy challenger, which the pipeline's rollout step canaries
and its runner promotes; then the champion alone takes the same traffic for as long as that canary
took (the no-rollout baseline); then day 3 trains `jobs.examples.demo_faults.SingleRowBugClassifier`
(it fails one-row requests), which the success-rate guardrail rolls back. Measured per rollout:
failed requests (split by whose they were), duration, checks, requests per version, the time from
the bad canary's first failed request to the rollback, and the CPU of the runner actor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    import _demo_env as env
    import _harness as h
except ImportError:  # run as `python -m benchmarks.rollout`
    from benchmarks import _demo_env as env
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
LOG_DIR, OUT_JSON = env.LOG_DIR, HERE / "results" / "rollout.json"
NAME = env.NAME
epoch, naive_utc = env.epoch, env.naive_utc
replay_summary, wait_settled = env.replay_summary, env.wait_settled
BAD_ESTIMATOR = "jobs.examples.demo_faults.SingleRowBugClassifier"
BAD_ERROR = "internal error (ValueError)"  # the 500 body of the bad model's failures (serve/app.py)
CLIENTS = 2
FAILURE_LIMIT = 2
TARGET_CPU_CORES = 0.10  # the runner: a small fraction of one core
LIVE_VARIANTS = ("champion", "challenger")  # not pinned / infra-validation requests
JsonDict = dict[str, Any]


def plan(interval_s: int) -> JsonDict:
    """The rollout section: the integration test's (tests/integration/test_rollout.py)."""
    return env.canary_plan(interval_s, FAILURE_LIMIT)


def derived_spec(interval_s: int) -> JsonDict:
    """demo.yaml with the test's model (no search, max_iter 60) and rollout plan, and the offline
    gate opened (no thresholds, slices or better-than-champion rule): both challengers must reach
    the rollout, which is what is measured. Read under this run's PLATFORM_HOME."""
    return env.demo_spec(plan(interval_s), evaluation={"thresholds": [], "slices": [],
                                                       "require_better_than_champion": False})


# --- the pipeline runs, in a child process (its driver, imports and threads stay out of the parent,
# --- which times the clients' requests) ----------------------------------------------------------


def run_day(work: Path, day: int, bad: bool = False) -> JsonDict:
    report = env.DayRun(work, day, LOG_DIR / f"rollout-day{day}.log", BAD_ESTIMATOR if bad else None).wait()
    if "error" in report:
        raise RuntimeError(f"the day-{day} pipeline run failed ({report['error']})")
    if report["status"] != "SUCCEEDED":
        raise RuntimeError(f"the day-{day} pipeline run {report['status']}: {report['message']}")
    print(f"  day {day}: {report['status']} in {report['seconds']}s; rollout step: "
          f"{report['steps'].get('rollout', ['-', 0, ''])[2][:160]}", flush=True)
    return report


# --- the runner actor ------------------------------------------------------------------------------


class RunnerWatch:
    """Finds the rollout's runner actor as soon as the pipeline's rollout step starts it (a new actor
    id whose loop runs; the previous rollout's idle actor is ignored) and reads its `alive()` then:
    the start reading. `end()` reads it again. Meanwhile only the GCS is polled, and then the
    actor's process CPU is sampled from /proc every 0.5 s (the actor runs on this machine): the
    measurement costs the runner two calls."""

    def __init__(self, ignore: str | None):
        self.ignore, self.start_reading, self.handle = ignore, None, None
        self.stop = threading.Event()
        self.error: str | None = None
        self.trace: list[tuple[float, float]] = []  # (time, cpu seconds) of the actor's process
        self.thread = threading.Thread(target=self._poll, daemon=True, name="runner-watch")
        self.thread.start()

    def _poll(self) -> None:
        import ray

        from mlplatform.rollout.runner import NAMESPACE, actor_name

        seen: set[str] = set()
        while not self.stop.is_set():
            if self.start_reading is not None:
                self._sample()
                self.stop.wait(0.5)
                continue
            try:
                handle = ray.get_actor(actor_name(NAME), namespace=NAMESPACE)
                aid = _actor_id(handle)
                if aid != self.ignore and aid not in seen:
                    reading = _read(handle)
                    if reading["running"]:
                        self.handle, self.start_reading = handle, {**reading, "actor_id": aid}
                    else:
                        seen.add(aid)
            except ValueError:  # no such actor (yet)
                pass
            except Exception as exc:  # noqa: BLE001 - a dying actor: look again
                self.error = f"{type(exc).__name__}: {exc}"[:300]
            self.stop.wait(0.25)

    def _sample(self) -> None:
        import psutil

        assert self.start_reading is not None
        try:
            cpu = psutil.Process(self.start_reading["pid"]).cpu_times()
        except psutil.Error:
            return
        self.trace.append((time.time(), cpu.user + cpu.system))

    def end(self, until: float | None) -> JsonDict:
        """The end reading; the wall time runs to `until` (when the rollout settled: the loop ends
        there, and the actor idles after it)."""
        self.stop.set()
        self.thread.join(timeout=30)
        start = self.start_reading
        if start is None or self.handle is None:
            return {"error": self.error or "the runner actor was never seen running"}
        end = {**_read(self.handle), "actor_id": start["actor_id"]}
        wall, cpu = (until or end["t"]) - start["t"], end["cpu_s"] - start["cpu_s"]
        out = {"start": start, "end": end, "wall_s": round(wall, 2), "cpu_s": round(cpu, 3),
               "restarted": end["pid"] != start["pid"],
               "cores": round(cpu / wall, 4) if wall > 0 and end["pid"] == start["pid"] else None,
               "checks": end["checks"] - (start["checks"] if end["pid"] == start["pid"] else 0)}
        trace = [(t - start["t"], c - start["cpu_s"]) for t, c in self.trace if t <= (until or end["t"])]
        out["cpu_trace"] = [[round(t, 2), round(c, 3)] for t, c in trace]
        # Cores in each 1 s of the trace. Over a short rollout the bursts (the first round's imports
        # and observation, each decision and its apply) fill half the windows: the lower quartile is
        # the loop's cost between them.
        per_s = sorted((c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in zip(trace, trace[2:], strict=False)
                       if t2 > t1)
        if per_s:
            out["cores_p25_1s"] = round(per_s[len(per_s) // 4], 4)
            out["cores_max_1s"] = round(per_s[-1], 4)
        if out["restarted"]:  # a restarted actor's counters start again at 0: only its own life counts
            out["note"] = "the actor restarted (new pid): cores not measured; checks since the restart"
        return out


def _actor_id(handle: Any) -> str:
    aid = getattr(handle, "_actor_id", None) or getattr(handle, "_ray_actor_id", None)
    return aid.hex() if hasattr(aid, "hex") else str(aid)


def _read(handle: Any) -> JsonDict:
    import ray

    reading = ray.get(handle.alive.remote(), timeout=30)
    return {**reading, "cpu_s": round(reading["cpu_s"], 3), "t": time.time()}


ray_driver = env.ray_driver


# --- one phase: traffic during a pipeline run and the rollout it starts -------------------------


def traffic(ctx: JsonDict, version: str) -> Any:
    from mlplatform.serving.replay import Replay, holdout_rows

    rows, labels = holdout_rows(ctx["services"], NAME, version)
    return Replay(ctx["url"], rows, labels, clients=CLIENTS,
                  rate_per_client=ctx["rate"] or None).start()


def served_log(ctx: JsonDict, since: float, until: float) -> Any:
    """The prediction log (what the replica recorded, per version) in [since, until]: written every
    second by the replica, so read once that has passed."""
    from mlplatform.serving.predictions import read_predictions

    time.sleep(max(0.0, until + 2.5 - time.time()))
    log = read_predictions(ctx["settings"].storage_uri, NAME, ctx["service"], since=naive_utc(since),
                           until=naive_utc(until), features=False)
    return log.loc[log["variant"].isin(LIVE_VARIANTS)] if not log.empty else log


def per_version(log: Any) -> JsonDict:
    if log.empty:
        return {}
    failed = log["error"].notna()
    return {str(v): {"answered": int((~failed[g.index]).sum()), "errors": int(failed[g.index].sum())}
            for v, g in log.groupby(log["version"].astype(str))}


def rollout_phase(ctx: JsonDict, key: str, day: int, bad: bool, champion: str) -> JsonDict:
    """Traffic from before the day's pipeline run until its rollout settles."""
    from mlplatform.rollout.store import RolloutStore

    store = RolloutStore(ctx["services"].metadata)
    previous = store.latest(NAME)
    watch = RunnerWatch(ignore=ctx.get("last_actor"))
    replay, began, settled_at = traffic(ctx, champion), time.time(), None
    res: JsonDict = {"estimator": BAD_ESTIMATOR if bad else "HistGradientBoostingClassifier(max_iter=60)"}
    try:
        res["pipeline"] = run_day(ctx["work"], day, bad)
        state = store.latest(NAME)
        if state is None or (previous is not None and state.id == previous.id):
            raise RuntimeError(f"the day-{day} run started no rollout: "
                               f"{res['pipeline']['steps'].get('rollout')}")
        print(f"  rollout {state.id}: v{state.challenger} at {state.weight}% against v{state.champion}; "
              "waiting for its decision ...", flush=True)
        state, settled_at = wait_settled(store, state.id, timeout_s=max(240, 40 * ctx["interval"]))
        time.sleep(1.0)  # requests in flight when the served config changed
    finally:
        stats, ended = replay.stop(), time.time()
        runner = watch.end(settled_at)
    ctx["last_actor"] = (runner.get("start") or {}).get("actor_id")
    start_at, end_at = epoch(state.timeline[0].at), epoch(state.timeline[-1].at)
    res.update(rollout_id=state.id, status=state.status, reason=state.reason, champion=state.champion,
               challenger=state.challenger, duration_s=round(end_at - start_at, 2),
               settled_after_s=round(settled_at - start_at, 2), runner=runner,
               timeline=[{"at_s": round(epoch(e.at) - start_at, 2), "action": e.action, "weight": e.weight,
                          "checks": {c.name: c.status for c in e.checks}, "reasons": e.reasons[:2]}
                         for e in state.timeline],
               replay=replay_summary(stats, began, ended))
    res["replay"]["started_before_rollout_s"] = round(start_at - began, 1)
    failures = [(t, s, body) for t, s, body in stats.failures]
    shown = failures if len(failures) <= 8 else failures[:5] + failures[-3:]
    res["failures"] = [{"at_s": round(t - start_at, 3), "status": s, "body": body[:120]}
                       for t, s, body in shown]
    res["failed_during_rollout"] = sum(1 for t, _, _ in failures if start_at <= t <= settled_at + 1.0)
    log = served_log(ctx, start_at, settled_at)
    res["served_during_rollout"] = per_version(log)
    theirs = log.loc[log["version"].astype(str) == state.challenger, "event_ts"] if not log.empty else []
    res["challenger_first_request_at_s"] = (round(epoch(theirs.min().to_pydatetime()) - start_at, 2)
                                            if len(theirs) else None)
    live = ctx["serve"].app(NAME)
    res["served_after"] = ({k: v for k, v in live.config.weights.items() if v}
                           if live and live.config else None)
    if bad:
        bad_phase(res, stats, state, log, start_at, ctx["interval"])
    print(f"  {key}: {state.status} after {res['duration_s']}s, {len(failures)} failed requests, "
          f"runner {runner.get('cores')} cores", flush=True)
    return res


def bad_phase(res: JsonDict, stats: Any, state: Any, log: Any, start_at: float, interval: int) -> None:
    """Whose failures they were, and how long the bad canary failed requests before the rollback."""
    mine = [(t, s) for t, s, body in stats.failures if s == 500 and BAD_ERROR in body]
    rollback = next((e for e in state.timeline if e.action == "rollback"), None)
    logged = per_version(log).get(state.challenger, {}).get("errors", 0)
    res["failed_split"] = {"challenger_5xx": len(mine), "others": stats.failed - len(mine),
                           "challenger_errors_in_prediction_log": logged}
    if not mine or rollback is None:
        res["time_to_rollback"] = {"error": "no rollback event" if mine else "no failure of the challenger"}
        return
    first, last, rolled = mine[0][0], mine[-1][0], epoch(rollback.at)
    failed_checks = [e for e in state.timeline if any(c.status == "failed" for c in e.checks)]
    runner_up = (res["runner"].get("start") or {}).get("t")
    res["time_to_rollback"] = {
        "first_failure_at_s": round(first - start_at, 2),  # since the rollout's start event
        "runner_running_at_s": round(runner_up - start_at, 2) if runner_up else None,
        "first_failed_check_at_s": round(epoch(failed_checks[0].at) - start_at, 2) if failed_checks else None,
        "rollback_at_s": round(rolled - start_at, 2),
        "first_failure_to_rollback_s": round(rolled - first, 2),
        "in_intervals": round((rolled - first) / interval, 2),
        "first_failure_to_last_failure_s": round(last - first, 2),  # routing to it stopped
        "rollback_to_last_failure_s": round(last - rolled, 2),
        "failed_checks": len(failed_checks)}


def champion_alone(ctx: JsonDict, seconds: float, version: str) -> JsonDict:
    """The baseline of the healthy canary: the same traffic, no rollout, as long as the canary ran."""
    replay, began = traffic(ctx, version), time.time()
    try:
        time.sleep(seconds)
    finally:
        stats, ended = replay.stop(), time.time()
    out = replay_summary(stats, began, ended)
    print(f"  champion v{version} alone for {out['seconds']}s: {out['sent']} requests, "
          f"{out['failed']} failed", flush=True)
    return out


def baselines(res: JsonDict, interval: int) -> None:
    """For the bad canary: the guardrail's bound (failure_limit x interval) and what the same
    traffic would have lost on a fixed step schedule with no guardrail, the schedule being the
    healthy canary's, as measured in this run (each weight held as long as it was held there)
    until its promotion: the bad model fails every one-row request it gets."""
    good, bad = res.get("healthy"), res.get("bad")
    if not good or not bad:
        return
    rate = bad["replay"]["rate_per_s"] or 0.0
    events = good["timeline"]
    held = [(e["weight"], nxt["at_s"] - e["at_s"]) for e, nxt in zip(events, events[1:], strict=False)
            if e["action"] in ("start", "advance")]
    weight0 = events[0]["weight"]
    res["baseline_bad"] = {
        "bound_s": FAILURE_LIMIT * interval,
        "failures_within_bound": round(weight0 / 100 * rate * FAILURE_LIMIT * interval),
        "fixed_schedule": [{"weight": w, "held_s": round(s, 2)} for w, s in held],
        "fixed_schedule_failures": round(sum(w / 100 * rate * s for w, s in held)),
        "rate_per_s": rate,
        "note": "after the promotion the bad model takes all the traffic: every request fails until a "
                "person rolls it back"}


# --- report --------------------------------------------------------------------------------------


def targets(res: JsonDict, interval: int) -> JsonDict:
    out: JsonDict = {}

    def verdict(name: str, value: float | None, target: str, met: bool | None, **extra: Any) -> None:
        out[name] = {"value": value, "target": target, "met": met, **extra}

    good, bad, alone = res.get("healthy"), res.get("bad"), res.get("champion_alone")
    if good:
        verdict("healthy: failed requests during the rollout", good["failed_during_rollout"], "0",
                good["failed_during_rollout"] == 0 and good["status"] == "promoted",
                baseline=alone["failed"] if alone else None, whole_phase=good["replay"]["failed"])
    if bad:
        split = bad["failed_split"]
        verdict("bad: failed requests not the challenger's", split["others"], "0", split["others"] == 0)
        ttr = bad.get("time_to_rollback", {})
        s = ttr.get("first_failure_to_rollback_s")
        verdict("bad: first failure to rollback (s)", s, f"<= {FAILURE_LIMIT * interval}",
                None if s is None else s <= FAILURE_LIMIT * interval and bad["status"] == "rolled_back",
                intervals=ttr.get("in_intervals"))
    for key in ("healthy", "bad"):
        cores = (res.get(key) or {}).get("runner", {}).get("cores")
        verdict(f"{key}: runner CPU (cores)", cores, f"<= {TARGET_CPU_CORES}",
                None if cores is None else cores <= TARGET_CPU_CORES)
    return out


def print_report(res: JsonDict, args: argparse.Namespace) -> None:
    from rich.markup import escape

    good, bad, alone = res.get("healthy") or {}, res.get("bad") or {}, res.get("champion_alone") or {}
    base, t = res.get("baseline_bad") or {}, res["targets"]
    met = {None: "-", True: "yes", False: "NO"}

    def row(label: str, value: Any, target: str = "-", baseline: str = "-",
            ok: bool | None = None) -> list[str]:
        return [escape(label), escape(str(value)), escape(target), escape(baseline), met[ok]]

    def versions(phase: JsonDict) -> str:
        return ", ".join(f"v{v} {n['answered']}" + (f" (+{n['errors']} 5xx)" if n["errors"] else "")
                         for v, n in phase.get("served_during_rollout", {}).items()) or "-"

    def runner(phase: JsonDict) -> str:
        r = phase.get("runner", {})
        if r.get("cores") is None:
            return str(r.get("note") or r.get("error") or "-")
        return (f"{r['cores']:.3f} ({r['cpu_s']:.2f} s / {r['wall_s']:.0f} s; "
                f"quiet 1 s {r.get('cores_p25_1s', '-')})")

    rows = []
    if good:
        tg = t["healthy: failed requests during the rollout"]
        rows += [row("healthy: decision", good["status"], "promoted", ok=good["status"] == "promoted"),
                 row("healthy: failed requests during the rollout", good["failed_during_rollout"], "0",
                     f"{alone.get('failed', '-')} (champion alone, {alone.get('seconds', '-')} s, "
                     f"{alone.get('sent', '-')} requests)", tg["met"]),
                 row("healthy: failed requests, whole phase (pipeline run too)", good["replay"]["failed"],
                     "0", ok=good["replay"]["failed"] == 0),
                 row("healthy: duration s (start to promote)", good["duration_s"]),
                 row("healthy: checks (runner)", good["runner"].get("checks", "-")),
                 row("healthy: requests per version (prediction log)", versions(good)),
                 row("healthy: runner CPU cores", runner(good), f"<= {TARGET_CPU_CORES}",
                     ok=t["healthy: runner CPU (cores)"]["met"])]
    if bad:
        split, ttr = bad["failed_split"], bad.get("time_to_rollback", {})
        tt = t["bad: first failure to rollback (s)"]
        rows += [row("bad: decision", bad["status"], "rolled_back", ok=bad["status"] == "rolled_back"),
                 row("bad: failed requests, challenger 5xx / others",
                     f"{split['challenger_5xx']} / {split['others']}", "others 0",
                     f"{base.get('fixed_schedule_failures', '-')} (fixed schedule, no guardrail, until "
                     f"promotion); {base.get('failures_within_bound', '-')} within the bound",
                     split["others"] == 0),
                 row("bad: first failure to rollback s",
                     f"{ttr.get('first_failure_to_rollback_s', '-')} "
                     f"({ttr.get('in_intervals', '-')} intervals)",
                     tt["target"], f"bound {base.get('bound_s', '-')} s = {FAILURE_LIMIT} x {args.interval}s",
                     tt["met"]),
                 row("bad: first to last failure s (routing stopped)",
                     ttr.get("first_failure_to_last_failure_s", "-")),
                 row("bad: s after start: 1st failure / runner up / 1st failed check / rollback",
                     " / ".join(str(ttr.get(k, "-")) for k in ("first_failure_at_s", "runner_running_at_s",
                                                               "first_failed_check_at_s", "rollback_at_s"))),
                 row("bad: duration s (start to rollback)", bad["duration_s"]),
                 row("bad: checks (runner) / failed checks",
                     f"{bad['runner'].get('checks', '-')} / {ttr.get('failed_checks', '-')}"),
                 row("bad: requests per version (prediction log)", versions(bad)),
                 row("bad: runner CPU cores", runner(bad), f"<= {TARGET_CPU_CORES}",
                     ok=t["bad: runner CPU (cores)"]["met"])]
    cfg = res["config"]
    h.print_table(
        escape(f"Canary rollouts under load: {CLIENTS} clients x "
               f"{cfg['rate_per_client'] or 'closed loop'} req/s, interval {cfg['interval_s']}s, "
               f"{res['machine']['cpu_count_logical']} CPUs"),
        [("rollout / measure", "left"), ("measured", "right"), ("target", "left"),
         ("baseline (same run)", "left"), ("met", "center")], rows,
        caption=escape("failed: 5xx or no answer, as the clients saw them. Times from the clients' clock "
                       "and the rollout's timeline (naive UTC). runner CPU: cpu seconds of the runner actor "
                       "between its first reading and the settled rollout, over that wall time; quiet 1 s: "
                       "the lower quartile of its 1 s windows (the loop between decisions). "
                       f"{args.out}"))


# --- main ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace, res: JsonDict, work: Path) -> None:
    from mlplatform.services import Services
    from mlplatform.serving.client import ServeControl

    # This process's environment is what the cluster, its jobs and the pipeline runs inherit.
    settings, res["cluster"] = env.start(work, fastpath=args.fastpath,
                                         estimator_modules="sklearn,jobs.examples.demo_faults")
    env.write_config(work, derived_spec(args.interval), args.rows_per_day)
    ray_driver(settings)
    services = Services(settings)
    ctx: JsonDict = {"work": work, "settings": settings, "services": services,
                     "serve": ServeControl(settings), "url": f"{settings.serve_url}/{NAME}",
                     "service": "churn", "interval": args.interval, "rate": args.rate}
    print("day 1: the first champion (served directly; log: results/logs/rollout-day1.log) ...", flush=True)
    res["day1"] = run_day(work, 1)
    print("day 2 under load: a healthy challenger, canaried ...", flush=True)
    res["healthy"] = rollout_phase(ctx, "healthy", 2, bad=False, champion=services.models.champion(NAME))
    time.sleep(2.0)
    res["champion_alone"] = champion_alone(ctx, res["healthy"]["duration_s"], services.models.champion(NAME))
    print("day 3 under load: SingleRowBugClassifier, canaried ...", flush=True)
    res["bad"] = rollout_phase(ctx, "bad", 3, bad=True, champion=services.models.champion(NAME))
    baselines(res, args.interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--interval", help="the canary's check interval, e.g. 5s (default 5s; quick 3s)")
    p.add_argument("--rows-per-day", type=int, help="demo events a day (default 1500; quick 600)")
    p.add_argument("--rate", type=float, default=20.0,
                   help="requests/s per client (default 20; 0: closed loop, as fast as answered)")
    p.add_argument("--fastpath", default="off", choices=["auto", "off", "haproxy"],
                   help="PLATFORM_SERVE_FASTPATH for the cluster (default off: Serve's Python proxy; "
                        "see the README for why not HAProxy)")
    p.add_argument("--quick", action="store_true", help="interval 3s, 600 rows a day")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(argv)
    from mlplatform.spec_types import duration_seconds

    interval = args.interval or ("3s" if args.quick else "5s")
    args.interval = duration_seconds(interval if interval[-1].isalpha() else f"{interval}s")
    args.rows_per_day = args.rows_per_day or (600 if args.quick else 1500)
    res: JsonDict = {
        "benchmark": "rollout", "machine": h.machine_info(), "errors": {},
        "packages": h.package_versions(["ray", "scikit-learn", "pandas"]),
        "config": {"interval_s": args.interval, "rows_per_day": args.rows_per_day, "clients": CLIENTS,
                   "rate_per_client": args.rate or None, "fastpath": args.fastpath, "quick": args.quick,
                   "plan": plan(args.interval), "target_cpu_cores": TARGET_CPU_CORES}}
    work = Path(tempfile.mkdtemp(prefix="mlp-bench-rollout-"))
    began = time.monotonic()
    try:
        run(args, res, work)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        res["errors"]["run"] = f"{type(exc).__name__}: {exc}"[:4000]
    finally:  # only this run's cluster (named by its temp dir) and files
        env.stop(work, res.get("cluster"))
    res["wall_s"] = round(time.monotonic() - began, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    res["targets"] = targets(res, args.interval)
    if res.get("healthy") or res.get("bad"):
        print_report(res, args)
    h.write_json(args.out, res)
    print(f"results: {args.out} ({res['wall_s']:.0f}s)", flush=True)
    return 1 if "run" in res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
