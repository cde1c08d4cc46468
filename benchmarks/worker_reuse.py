"""Benchmark: bursts of Ray tasks with pauses between them on the local cluster, with idle
worker processes kept 10 s (`cluster up`'s setting, runtime/local.py WORKER_IDLE_KEEP_MS)
against Ray's own 1 s (the baseline), in the same run.

    .venv/bin/python benchmarks/worker_reuse.py                     # 8 bursts of 4 tasks, 3 s apart
    .venv/bin/python benchmarks/worker_reuse.py --bursts 12 --pause 5

A pipeline's work reaches Ray in bursts: a step's tasks, a search's trials, a deploy's build
task, with seconds between them. Each variant starts its own local cluster (`cluster.up`,
2 CPUs, the setting fixed at start), runs the bursts as one driver (one job), and stops it.
A burst is `--width` zero-CPU tasks submitted together (more than the cluster's CPUs, as a step's
zero-CPU tasks or several steps' tasks can be) and each import pyarrow.compute and sum an
array: what a fresh worker pays before its first data task. Reported per variant: the
median burst's wall time, the machine's busy CPU seconds over all bursts (every process, so
the table shows the load of other processes too), and how many worker processes ran the
tasks.
Results: benchmarks/results/worker_reuse.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from mlplatform.runtime.local import WORKER_IDLE_KEEP_ENV, WORKER_IDLE_KEEP_MS

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.worker_reuse`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "results" / "worker_reuse.json"
VARIANTS = {f"kept {WORKER_IDLE_KEEP_MS / 1000:g} s (platform)": str(WORKER_IDLE_KEEP_MS),
            "Ray's 1 s (baseline)": "1000"}


def _busy_cpu_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _variant(keep_ms: str, bursts: int, width: int, pause: float) -> dict[str, Any]:
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ[WORKER_IDLE_KEEP_ENV] = keep_ms  # what `cluster up` passes to the head (a user's value wins)
    home = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
    os.environ["PLATFORM_HOME"] = str(home)
    import ray

    from mlplatform.runtime import local
    from mlplatform.runtime.connect import connect
    from mlplatform.settings import load_settings

    settings = load_settings()
    local.up(settings, num_cpus=2, port=local.free_port(), dashboard_port=local.free_port(),
             object_store_mb=300)
    try:
        connect(load_settings())

        @ray.remote(num_cpus=0)
        def work() -> int:
            import numpy as np
            import pyarrow as pa
            import pyarrow.compute as pc

            pc.sum(pa.array(np.arange(100_000))).as_py()
            time.sleep(0.2)  # the burst's tasks overlap: each holds its own worker
            return os.getpid()

        ray.get([work.remote() for _ in range(width)])  # untimed: the first workers of the job
        time.sleep(pause)
        walls, pids = [], set()
        cpu0, load0 = _busy_cpu_s(), os.getloadavg()[0]
        for _ in range(bursts):
            began = time.monotonic()
            pids.update(ray.get([work.remote() for _ in range(width)]))
            walls.append(time.monotonic() - began)
            time.sleep(pause)
        cpu = _busy_cpu_s() - cpu0
        ray.shutdown()
    finally:
        local.down(load_settings())
    return {"keep_ms": int(keep_ms), "burst_s": walls, "median_burst_s": statistics.median(walls),
            "busy_cpu_s": cpu, "worker_processes": len(pids), "load_avg_before": load0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bursts", type=int, default=8)
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--pause", type=float, default=3.0, help="seconds between bursts")
    args = p.parse_args(argv)
    results = {}
    for name, keep_ms in VARIANTS.items():
        # Each variant in its own interpreter: Ray's driver state and the env do not carry over.
        code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import worker_reuse as w; "
                f"print('RESULT ' + json.dumps(w._variant({keep_ms!r}, {args.bursts}, {args.width}, "
                f"{args.pause})))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[name] = json.loads(line[len("RESULT "):])
    h.write_json(OUT_JSON, {"benchmark": "worker_reuse", "bursts": args.bursts, "width": args.width,
                            "pause_s": args.pause, "machine": h.machine_info(), "results": results})
    base = results["Ray's 1 s (baseline)"]
    rows = [[name, h.fmt_float(r["median_burst_s"]), h.fmt_float(r["busy_cpu_s"], 1),
             str(r["worker_processes"]), f"{r['busy_cpu_s'] / base['busy_cpu_s']:.2f}x",
             h.fmt_float(r["load_avg_before"])] for name, r in results.items()]
    title = f"{args.bursts} bursts of {args.width} tasks, {args.pause:g} s apart, on a 2-CPU local cluster"
    h.print_table(title, [("idle workers kept", "left"), ("median burst s", "right"),
                          ("busy CPU s (machine)", "right"), ("workers that ran tasks", "right"),
                          ("CPU vs baseline", "right"), ("load before", "right")],
                  rows, caption=f"results: {OUT_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
