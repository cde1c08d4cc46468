"""Benchmark: pipeline latency, from `platformctl submit SPEC --wait` to the registered model version,
against the same pipeline as one plain Python script, on the same files.

    .venv/bin/python benchmarks/pipeline.py                                   # demo + price, 1k..1M rows
    .venv/bin/python benchmarks/pipeline.py --datasets demo --rows 4000       # the 4k target figure
    .venv/bin/python benchmarks/pipeline.py --rows 1000,10000 --repeat 3      # medians of 3

Per data set (benchmarks/_pipeline_data.py: `demo`, the churn classifier of jobs/examples/demo.yaml
without its deploy section; `price`, a house-price regressor), a throwaway PLATFORM_HOME with its
own local cluster (_demo_env.start: `num_cpus`, free ports, token auth; stopped and removed at the
end, also on failure, Ctrl-C or SIGTERM). Per size: an untimed warm-up run on a small fresh day
(cluster, runtime env, imports and caches warm; the first one also infers the schema), then per
repeat a fresh day of `rows` rows in the source folder and one timed run: the venv's `platformctl
submit SPEC --wait --json --run-id R --step ingest ... --step register` as a subprocess (the steps
ingest -> validate -> featurize -> training_set -> train -> evaluate -> register; `--all-steps`
adds promote and rollout, which serve nothing without a deploy section), then the plain script
(_plain_pipeline.py) as a subprocess on the same day, with the day before as its reference.

Measured: the wall time of each subprocess (platform: submit -> the CLI's exit after the job
ended; plain: interpreter start -> exit); from the metadata store each step's execution
(started_at / ended_at), the run's start and end, the gaps between steps, the job's start from Ray
Jobs, and each step's `execution` summary (local / cluster placement) when it has one; the plain
script's seconds per stage; the holdout metric of both; per data set, the Ray Job floor (submit ->
SUCCEEDED of `python -c pass`, and of a driver that only imports the pipeline's entrypoint); the
CPU that other processes used during each run (the machine is shared: >= 0.25 cores is flagged
BUSY). With --repeat N, medians.
Results: benchmarks/results/pipeline.json; logs: benchmarks/results/logs/pipeline-*.log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import _demo_env as env
    import _harness as h
    import _pipeline_data as data
except ImportError:  # run as `python -m benchmarks.pipeline`
    from benchmarks import _demo_env as env
    from benchmarks import _harness as h
    from benchmarks import _pipeline_data as data

HERE = Path(__file__).resolve().parent
LOG_DIR, OUT_JSON = env.LOG_DIR, HERE / "results" / "pipeline.json"
PLATFORMCTL = Path(sys.executable).parent / "platformctl"
PLAIN = HERE / "_plain_pipeline.py"
STEPS = ("ingest", "validate", "featurize", "training_set", "train", "evaluate", "register")
BUSY_CORES = 0.25
PLATFORM_FIGURES = ("total_s", "job_start_s", "ray_job_start_s", "run_start_s", "run_end_s", "gaps_s",
                    "tail_s", "metric")
JsonDict = dict[str, Any]
WARM_SERVER = "mlplatform.runtime.warm_server"


# --- one platform run -------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return env.epoch(dt.datetime.fromisoformat(value) if isinstance(value, str) else value)


def _since(t0: float, value: Any) -> float | None:
    t = _epoch(value)
    return None if t is None else round(t - t0, 3)


def cpu_share(m: h.Measured) -> JsonDict:
    if len(m.cpu_marks) < 2:
        return {}
    return m.cpu([(m.cpu_marks[0][0], m.cpu_marks[-1][0])])


def submit(ctx: JsonDict, tag: str) -> JsonDict:
    """One `platformctl submit --wait` of the spec, timed, with the run's record from the store."""
    from mlplatform.run_ids import new_run_id

    run_id = new_run_id(ctx["dataset"])
    steps = [] if ctx["all_steps"] else [a for s in STEPS for a in ("--step", s)]
    cmd = [str(PLATFORMCTL), "submit", str(ctx["spec"]), "--working-dir", str(ctx["spec"].parent),
           "--wait", "--json", "--run-id", run_id, *steps]
    log = LOG_DIR / f"pipeline-{ctx['dataset']}-{tag}.log"
    load = os.getloadavg()[0]
    t0 = time.time()
    # The cluster's processes, and the warm driver server whose child does the run's work
    # (mlplatform.runtime.warm_driver): the platform's, not "other processes".
    m = h.run_measured(cmd, env=dict(os.environ), marker=(ctx["cluster"]["temp_dir"], WARM_SERVER),
                       interval=0.2, log_path=log)
    rec: JsonDict = {"run_id": run_id, "rc": m.returncode, "total_s": m.wall_s, "log": str(log),
                     "load_avg_1m_before": round(load, 2), "cpu": cpu_share(m), "peak": m.peak()}
    detail = ctx["store"].run(run_id)
    if detail is None:
        rec.update(status="NO_RUN", error=h.tail(log, 15))
        return rec
    props = detail.properties
    rec.update(status=detail.status, message=detail.message, job_id=detail.job_id,
               steps_requested=props.get("steps"), run_start_s=_since(t0, props.get("started_at")),
               run_end_s=_since(t0, props.get("ended_at")))
    try:
        rec["ray_job_start_s"] = _since(t0, ctx["jobs"].status(detail.job_id).start_time)
    except Exception as exc:  # noqa: BLE001 - a figure less, not a failed benchmark
        rec["ray_job_start_s"] = None
        rec["ray_job_error"] = f"{type(exc).__name__}: {exc}"[:300]
    steps_out: JsonDict = {}
    ends: list[float] = []
    for e in detail.steps:
        ex = e.summary.get("execution") if isinstance(e.summary, dict) else None
        ex = ex if isinstance(ex, dict) else {}
        steps_out[e.step] = {"s": round(e.duration_s or 0.0, 3), "status": e.status,
                             "start_s": _since(t0, e.started_at), "placement": ex.get("placement"),
                             "rows": ex.get("rows"), "threshold_rows": ex.get("threshold_rows")}
        if e.ended_at is not None:
            ends.append(_epoch(e.ended_at) or 0.0)
        if e.step == "train":
            models = e.summary.get("models") or [{}]
            rec["holdout"] = models[0].get("holdout") or {}
        if e.step == "register":
            rec["version"] = next((v.get("version") for v in e.summary.values()
                                   if isinstance(v, dict) and "version" in v), None)
        if e.status != "COMPLETE":
            rec["error"] = (e.error or "")[-1500:]
    rec["steps"] = steps_out
    if detail.steps:
        rec["job_start_s"] = steps_out[detail.steps[0].step]["start_s"]
        rec["gaps_s"] = round(sum(
            (_epoch(b.started_at) or 0) - (_epoch(a.ended_at) or 0)
            for a, b in zip(detail.steps, detail.steps[1:], strict=False) if a.ended_at), 3)
        rec["tail_s"] = round(t0 + m.wall_s - max(ends), 3) if ends else None
    rec["metric"] = rec.get("holdout", {}).get(ctx["metric"])
    if rec["status"] != "SUCCEEDED" or m.returncode != 0:
        rec.setdefault("error", h.tail(log, 15))
        ctx["failed"] = True
        if rec["status"] == "RUNNING" and detail.job_id:  # the CLI failed, not the job: end it
            rec["job_stopped"] = data.stop_job(ctx["jobs"], detail.job_id)
    return rec


def trial_configs(raw: JsonDict, path: Path) -> Path:
    """The configurations the platform's search tries for this spec (Tune's draws for its seed,
    mlplatform.training.local_search.configs), for the plain script to try the same ones:
    then both pick from the same trials and their holdout metrics compare. Computed here, so
    the plain script's timed run does not pay for importing Ray Tune."""
    from mlplatform.spec import ModelSpec
    from mlplatform.training.local_search import configs

    path.write_text(json.dumps(configs(ModelSpec.model_validate(raw["model"])), default=str))
    return path


def plain(ctx: JsonDict, current: Path, previous: Path, tag: str, rows: int) -> JsonDict:
    """The plain script on the same day, in a fresh interpreter."""
    threads = ctx["plain_threads"] or (1 if rows < 100_000 else ctx["num_cpus"])
    child_env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(PLAIN), "--spec", str(ctx["spec"]), "--current", str(current),
           "--previous", str(previous), "--out-dir", str(ctx["work"] / "plain" / tag),
           "--n-jobs", str(ctx["plain_jobs"]), "--configs", str(ctx["configs"])]
    log = LOG_DIR / f"pipeline-{ctx['dataset']}-{tag}-plain.log"
    load = os.getloadavg()[0]
    began = time.monotonic()
    m = h.run_measured(cmd, env=child_env, interval=0.2, log_path=log)
    res = m.result or {"status": "failed", "reason": f"exit {m.returncode}: {h.tail(log, 15)}"}
    phases = dict(m.phases)
    rec: JsonDict = {"status": res.get("status"), "total_s": m.wall_s, "omp_threads": threads,
                     "n_jobs": ctx["plain_jobs"], "log": str(log), "load_avg_1m_before": round(load, 2),
                     "cpu": cpu_share(m), "peak": m.peak(), "stages": res.get("stages", {}),
                     "holdout": res.get("holdout", {}), "best": res.get("best"),
                     "validation": res.get("validation"), "reason": res.get("reason")}
    if "started" in phases:
        rec["start_s"] = round(phases["started"] - began, 3)
    if "register end" in phases:
        rec["tail_s"] = round(began + m.wall_s - phases["register end"], 3)
    rec["metric"] = rec["holdout"].get(ctx["metric"])
    return rec


def job_floor(ctx: JsonDict, settings: Any, repeat: int = 3) -> JsonDict:
    """What any Ray Job costs on this cluster before the platform does anything: submit -> the
    job seen SUCCEEDED (polled every 50 ms) for `python -c pass`, then for a driver that only
    imports what a cold driver imports over a run (the warm driver server's list,
    `mlplatform.runtime.warm_server.warm_up`: the platform's steps, pandas, pyarrow,
    scikit-learn, SciPy, MLflow, Ray Tune), each with the runtime env a pipeline job gets (the
    spec's folder and the platform's packages). The pipeline's own overhead is the rest of its
    total; the floor says how close to the plain script a small day can get through Ray Jobs."""
    from mlplatform.run_ids import new_run_id
    from mlplatform.runtime.jobs import build_runtime_env

    out: JsonDict = {}
    for label, code in (("empty", "pass"),
                        ("imports", "from mlplatform.runtime.warm_server import warm_up; warm_up()")):
        times = []
        for _ in range(repeat):
            job_id = new_run_id(f"floor-{label}")
            runtime_env = build_runtime_env(settings, ctx["spec"].parent, job_id)
            t0 = time.monotonic()
            ctx["jobs"].submit(f'python -c "{code}"', runtime_env, job_id, {"benchmark": "floor"})
            while (info := ctx["jobs"].status(job_id)).status not in ("SUCCEEDED", "FAILED", "STOPPED"):
                time.sleep(0.05)
            if info.status != "SUCCEEDED":
                out[label] = {"error": f"{job_id} {info.status}: {info.message}"[:500]}
                break
            times.append(time.monotonic() - t0)
        else:
            out[label] = {"s": _med(times), "runs": [round(t, 3) for t in times]}
    return out


def print_floor(dataset: str, floor: JsonDict) -> None:
    rows = [[label, _f((floor.get(key) or {}).get("s")), (floor.get(key) or {}).get("error", "")[:120]]
            for key, label in (("empty", "Ray Job of `python -c pass`"),
                               ("imports", "Ray Job of a cold driver's imports"))]
    h.print_table(f"{dataset}: the Ray Job floor, submit -> SUCCEEDED seen (median of 3, seconds)",
                  [("job", "left"), ("seconds", "right"), ("error", "left")], rows)


# --- one size ---------------------------------------------------------------------------


def next_file(ctx: JsonDict, rows: int) -> Path:
    ctx["number"] += 1
    began = time.monotonic()
    path = data.write_file(ctx["dataset"], ctx["source"], rows, ctx["number"])
    print(f"  wrote {path.name}: {rows:,} rows in {time.monotonic() - began:.1f}s", flush=True)
    return path


def warm_server_ready(ctx: JsonDict) -> bool:
    """Whether a warm driver server of this data set's cluster (its GCS port on the command line)
    listens on its socket."""
    import psutil

    from mlplatform.runtime.warm_driver import socket_path

    port = ":" + ctx["cluster"]["gcs_address"].rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if len(cmd) >= 5 and cmd[2] == WARM_SERVER and cmd[4].endswith(port):
            if socket_path(cmd[3]).exists():
                return True
    return False


def run_size(ctx: JsonDict, rows: int, args: argparse.Namespace, out: JsonDict) -> None:
    """Fills `out` as it goes: an interrupted size keeps the repeats it finished."""
    name = f"{ctx['dataset']} {rows:,} rows"
    print(f"[{name}] warm-up run on {args.warmup_rows:,} rows (untimed)", flush=True)
    previous = next_file(ctx, args.warmup_rows)
    warm = submit(ctx, f"{rows}-warmup")
    out["warmup"] = {k: warm.get(k) for k in ("status", "total_s", "run_id", "error")}
    print(f"  warm-up {warm.get('status')} in {warm['total_s']:.1f}s", flush=True)
    if warm.get("status") != "SUCCEEDED" or warm.get("rc") != 0:
        out["error"] = f"warm-up run {warm.get('status')}: {warm.get('error', '')}"[-2000:]
        return
    if args.warm_driver == "on" and not warm_server_ready(ctx):
        # The second cold driver of a code version starts the node's warm driver server
        # (mlplatform.runtime.warm_driver): the timed runs see the steady state it serves.
        print("  second warm-up run: starts the warm driver server", flush=True)
        previous = next_file(ctx, args.warmup_rows)
        second = submit(ctx, f"{rows}-warmup2")
        out["warmup2"] = {k: second.get(k) for k in ("status", "total_s", "run_id", "error")}
        deadline = time.monotonic() + 180
        while not warm_server_ready(ctx) and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"  warm driver server {'ready' if warm_server_ready(ctx) else 'NOT up'}", flush=True)
    for r in range(args.repeat):
        current = next_file(ctx, rows)
        tag = f"{rows}-r{r + 1}"
        p = submit(ctx, tag)
        print(f"  platform {p.get('status')} in {p['total_s']:.1f}s (version {p.get('version')})", flush=True)
        b = plain(ctx, current, previous, tag, rows)
        print(f"  plain {b.get('status')} in {b['total_s']:.1f}s", flush=True)
        out["repeats"].append({"platform": p, "plain": b, "file": current.name, "reference": previous.name})
        previous = current
    out["median"] = medians(out["repeats"])
    out["targets"] = targets(rows, out["median"])


def _med(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(nums), 3) if nums else None


def medians(repeats: list[JsonDict]) -> JsonDict:
    """Medians over the repeats that succeeded (a failed run's times say nothing about latency)."""
    ps = [r["platform"] for r in repeats
          if r["platform"].get("status") == "SUCCEEDED" and r["platform"]["rc"] == 0]
    bs = [r["plain"] for r in repeats if r["plain"].get("status") == "ok"]
    steps = list(dict.fromkeys(s for p in ps for s in p.get("steps", {})))
    return {
        "ok": len(ps) == len(bs) == len(repeats), "runs": {"platform": len(ps), "plain": len(bs)},
        "platform": {k: _med([p.get(k) for p in ps]) for k in PLATFORM_FIGURES},
        "plain": {k: _med([b.get(k) for b in bs]) for k in ("total_s", "start_s", "tail_s", "metric")},
        "steps": {s: _med([p.get("steps", {}).get(s, {}).get("s") for p in ps]) for s in steps},
        "stages": {s: _med([b.get("stages", {}).get(s) for b in bs]) for s in STEPS},
        "placement": {s: sorted({str(p["steps"][s]["placement"]) for p in ps
                                 if p.get("steps", {}).get(s, {}).get("placement")}) for s in steps},
        "other_cores": max([x["cpu"].get("other_cores", 0) for x in ps + bs if x.get("cpu")], default=None),
    }


def targets(rows: int, med: JsonDict) -> list[JsonDict]:
    """Issue 15's targets for this size (none for the other sizes)."""
    total, base = med["platform"]["total_s"], med["plain"]["total_s"]
    ratio = total / base if total and base else None
    out: list[JsonDict] = []
    if rows == 4000:
        out.append({"target": "submit -> registered <= 10 s", "value": total,
                    "met": total is not None and total <= 10})
    for size, bound in ((4000, 2.0), (100_000, 2.0), (1_000_000, 1.0)):
        if rows == size:
            out.append({"target": f"<= {bound:g}x the plain script", "value": ratio,
                        "met": ratio is not None and ratio <= bound})
    return out


# --- output -----------------------------------------------------------------------------


def _f(value: float | None, digits: int = 2) -> str:
    return h.fmt_float(value, digits)


def _metric(value: float | None) -> str:
    """AUC to 4 decimals, an RMSE in currency units to the unit."""
    return h.fmt_float(value, 0 if value is not None and abs(value) >= 100 else 4)


def print_size(res: JsonDict) -> None:
    from rich.markup import escape

    med, ds, rows = res.get("median"), res["dataset"], res["rows"]
    if not med:
        print(f"[{ds} {rows:,}] no result: {res.get('error', '')[:500]}", flush=True)
        return
    p, b = med["platform"], med["plain"]

    def row(label: str, pv: float | None, bv: float | None, place: str = "") -> list[str]:
        diff = pv - bv if pv is not None and bv is not None else None
        ratio = f"{pv / bv:.2f}x" if pv is not None and bv else "-"
        return [escape(label), _f(pv), _f(bv), _f(diff), ratio, escape(place)]

    rows_out = [row("total: submit -> CLI exit / script run", p["total_s"], b["total_s"]),
                row("job start (submit -> first step) / interpreter + imports", p["job_start_s"],
                    b["start_s"]),
                row("  submit -> Ray job start", p["ray_job_start_s"], None),
                row("  submit -> run start (driver up)", p["run_start_s"], None)]
    for s in med["steps"]:
        rows_out.append(row(s, med["steps"][s], med["stages"].get(s), ",".join(med["placement"].get(s, []))))
    rows_out.append(row("between steps", p["gaps_s"], None))
    rows_out.append(row("last step -> exit", p["tail_s"], b["tail_s"]))
    end = p["total_s"] - p["run_end_s"] if p["total_s"] is not None and p["run_end_s"] is not None else None
    rows_out.append(row("  run end -> exit", end, None))
    metric = res["metric"]
    tg = "; ".join(f"{t['target']}: {'met' if t['met'] else 'NOT met'}" for t in res.get("targets", []))
    busy = med.get("other_cores")
    failed = [f"{k}: {x.get('error') or x.get('reason') or x.get('status')}"[:300]
              for r in res["repeats"] for k, x in r.items() if k in ("platform", "plain")
              and x.get("status") not in ("SUCCEEDED", "ok")]
    caption = ((f"FAILED runs ({len(failed)}): {' | '.join(failed)}. " if failed else "")
               + f"median of {med['runs']['platform']} platform / {med['runs']['plain']} plain runs; "
               f"holdout {metric} platform {_metric(p['metric'])}, plain "
               f"{_metric(b['metric'])}; other processes used {_f(busy)} cores (the most of any run)"
               f"{' BUSY' if busy is not None and busy >= BUSY_CORES else ''}"
               + (f". Targets: {tg}" if tg else ""))
    h.print_table(escape(f"{ds}: {rows:,} rows, seconds"),
                  [("stage", "left"), ("platform", "right"), ("plain", "right"), ("overhead", "right"),
                   ("ratio", "right"), ("placement", "left")], rows_out, caption=escape(caption))


def print_summary(results: list[JsonDict]) -> None:
    from rich.markup import escape

    rows = []
    for r in results:
        med = r.get("median") or {"platform": {}, "plain": {}}
        p, b = med["platform"], med["plain"]
        ratio = p.get("total_s") / b["total_s"] if p.get("total_s") and b.get("total_s") else None
        tg = "; ".join(f"{t['target']}: {'met' if t['met'] else 'NOT met'}" for t in r.get("targets", []))
        rows.append([r["dataset"], h.fmt_int(r["rows"]), _f(p.get("total_s")), _f(b.get("total_s")),
                     f"{ratio:.2f}x" if ratio else "-", _f(p.get("job_start_s")),
                     _metric(p.get("metric")), _metric(b.get("metric")),
                     escape(tg or r.get("error", "")[:80] or "-")])
    h.print_table("Pipeline latency: submit -> registered vs the plain script (seconds)",
                  [("data set", "left"), ("rows", "right"), ("platform", "right"), ("plain", "right"),
                   ("ratio", "right"), ("job start", "right"), ("metric platform", "right"),
                   ("metric plain", "right"), ("targets", "left")], rows)


# --- main -------------------------------------------------------------------------------


def run_dataset(dataset: str, args: argparse.Namespace, res: JsonDict) -> None:
    from mlplatform.metadata.store import MetadataStore
    from mlplatform.runtime.jobs import JobsClient

    work = Path(tempfile.mkdtemp(prefix=f"mlp-bench-pipeline-{dataset}-"))
    cluster: JsonDict | None = None
    ctx: JsonDict = {}
    out = res["datasets"].setdefault(dataset, {})
    try:
        settings, cluster = env.start(work, fastpath="off", num_cpus=args.num_cpus,
                                      object_store_mb=args.object_store_mb,
                                      extra_env={"PLATFORM_WARM_DRIVER": args.warm_driver})
        out["cluster"] = cluster
        raw = data.spec(dataset, args.placement)
        ctx.update({
            "dataset": dataset, "work": work, "cluster": cluster, "number": 0,
            "spec": data.write_spec(work / "job" / f"{dataset}.yaml", raw),
            "source": data.source_dir(settings.home, dataset), "metric": raw["model"]["metric"],
            "store": MetadataStore(settings.metadata_url), "jobs": JobsClient(settings),
            "all_steps": args.all_steps, "num_cpus": args.num_cpus, "plain_jobs": args.plain_jobs,
            "plain_threads": args.plain_threads})
        out["spec"] = raw
        ctx["configs"] = trial_configs(raw, work / "job" / "configs.json")
        out["job_floor"] = job_floor(ctx, settings)
        print_floor(dataset, out["job_floor"])
        for rows in args.rows:
            result: JsonDict = {"dataset": dataset, "rows": rows, "metric": ctx["metric"], "repeats": []}
            res["results"].append(result)
            run_size(ctx, rows, args, result)
            print_size(result)
            h.write_json(args.out, res)  # what is done so far survives an interrupted run
    finally:  # only this data set's cluster (named by its temp dir) and files
        with data.shielded():
            if cluster is not None and (ctx.get("failed") or sys.exc_info()[0] is not None):
                saved = data.save_cluster_logs(cluster, LOG_DIR / f"pipeline-{dataset}-cluster")
                if saved:
                    print(f"the cluster's logs: {saved}", flush=True)
            data.stop(work, cluster)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="demo,price", help="comma-separated: demo, price")
    p.add_argument("--rows", default="1000,10000,100000,1000000", help="comma-separated day sizes")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per size (the median is reported)")
    p.add_argument("--warmup-rows", type=int, default=1000, help="rows of the untimed warm-up day")
    p.add_argument("--num-cpus", type=int, default=2, help="the local cluster's CPUs")
    p.add_argument("--object-store-mb", type=int, default=1024)
    p.add_argument("--placement", choices=["auto", "local", "cluster"],
                   help="the spec's execution.placement (default: the spec says nothing)")
    p.add_argument("--all-steps", action="store_true",
                   help="run every step (promote and rollout too), not only ingest..register")
    p.add_argument("--plain-jobs", type=int, default=1, help="the plain script's RandomizedSearchCV n_jobs")
    p.add_argument("--plain-threads", type=int, default=0,
                   help="OMP_NUM_THREADS of the plain script (0: 1 below 100k rows, else --num-cpus)")
    p.add_argument("--warm-driver", choices=["on", "off"], default="on",
                   help="PLATFORM_WARM_DRIVER on the cluster: off runs every driver cold, as before")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    args = p.parse_args(argv)
    args.rows = [int(x) for x in args.rows.split(",") if x.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in data.DATASETS]
    if unknown or args.repeat < 1:
        p.error(f"unknown data set(s) {unknown}; choose from {list(data.DATASETS)}" if unknown
                else "--repeat must be at least 1")
    env.sigterm_as_interrupt()
    res: JsonDict = {"benchmark": "pipeline", "machine": h.machine_info(), "errors": {},
                     "packages": h.package_versions(["ray", "scikit-learn", "pandas", "scipy"]),
                     "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "steps": None if args.all_steps else list(STEPS), "datasets": {}, "results": []}
    began, rc = time.monotonic(), 0
    try:
        for dataset in datasets:
            try:
                run_dataset(dataset, args, res)
            except Exception as exc:
                import traceback

                traceback.print_exc()
                res["errors"][dataset] = f"{type(exc).__name__}: {exc}"[:4000]
                rc = 1
    except KeyboardInterrupt as exc:
        res["errors"]["interrupted"] = str(exc) or "KeyboardInterrupt"
        rc = 130
    res["wall_s"] = round(time.monotonic() - began, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if res["results"]:
        print_summary(res["results"])
    h.write_json(args.out, res)
    print(f"results: {args.out} ({res['wall_s']:.0f}s)", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
