"""Benchmark: `platformctl dry-run` of the demo spec (issue 16's target: under 60 s on 2 cores),
beside the same steps run in production on the warm cluster, on the same number of rows.

    .venv/bin/python benchmarks/dryrun.py                    # 2,000 rows (the default sample), 3 repeats
    .venv/bin/python benchmarks/dryrun.py --rows 4000 --repeat 1

A throwaway PLATFORM_HOME with its own local cluster (_demo_env.start; stopped and removed at the
end, also on failure or Ctrl-C), the demo spec with a direct rollout, and one untimed production
run on a first day (schema inferred, Serve started, a champion served). Then per repeat a fresh
day of `rows` rows lands and is timed twice:

- baseline: `platformctl submit SPEC --wait` of ingest -> ... -> register on the warm production
  cluster (the steps the dry-run shares with production, without promote and rollout, whose work
  depends on the gate's verdict of the day);
- dry-run: `platformctl dry-run SPEC --sample rows --json`, every step including the rollout's
  infra validation in its scratch cluster's Serve replica, with the scratch cluster's start.

Each figure is the wall time of the CLI process (interpreter start to exit). With --repeat N,
medians. Results: benchmarks/results/dryrun.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

try:
    import _demo_env as env
    import _harness as h
except ImportError:  # run as `python -m benchmarks.dryrun`
    from benchmarks import _demo_env as env
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_JSON = HERE / "results" / "dryrun.json"
PLATFORMCTL = str(Path(sys.executable).parent / "platformctl")
TARGET_S = 60.0
BASELINE_STEPS = ("ingest", "validate", "featurize", "training_set", "train", "evaluate", "register")


def _timed(cmd: list[str]) -> tuple[float, dict[str, Any]]:
    began = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}: {proc.stderr[-2000:]}"
                           f"{proc.stdout[-3000:]}")
    return seconds, json.loads(proc.stdout)


def _write_day(home: Path, rows: int, day: int) -> None:
    from mlplatform.data.synthetic import DemoDataConfig, write_day

    cfg = DemoDataConfig(days=day, rows_per_day=rows, entities=max(300, rows // 4))
    write_day(home / "demo" / "data", cfg, day)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    env.sigterm_as_interrupt()
    work = Path(tempfile.mkdtemp(prefix="bench-dryrun-"))
    cluster = None
    runs: list[dict[str, Any]] = []
    try:
        settings, cluster = env.start(work, fastpath="auto")
        spec = env.demo_spec({"strategy": "direct"})
        spec_file = work / "job" / "demo.yaml"  # the job's working directory (its code travels too)
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        _write_day(settings.home, args.rows, 1)
        print("warm-up: the first production run (schema, Serve, a champion)", flush=True)
        submit = [PLATFORMCTL, "submit", str(spec_file), "--working-dir", str(spec_file.parent), "--wait",
                  "--json"]
        _timed(submit)
        for i in range(args.repeat):
            _write_day(settings.home, args.rows, i + 2)
            steps = [a for s in BASELINE_STEPS for a in ("--step", s)]
            base_s, base = _timed([*submit, *steps])
            dry_s, dry = _timed([PLATFORMCTL, "dry-run", str(spec_file), "--sample", str(args.rows), "--json",
                                 "--quiet"])
            by_step = {s["step"]: s["duration_s"] for s in dry["steps"]}
            runs.append({"baseline_s": round(base_s, 2), "baseline_status": base["job"]["status"],
                         "dry_run_s": round(dry_s, 2), "dry_run_status": dry["status"],
                         "scratch_cluster_s": dry["cluster_s"], "dry_run_steps_s": by_step,
                         "sample_rows": dry["sample"]["rows"]})
            print(f"repeat {i + 1}: production {base_s:.1f}s, dry-run {dry_s:.1f}s "
                  f"(scratch cluster {dry['cluster_s']:.1f}s, rollout {by_step.get('rollout', 0):.1f}s)",
                  flush=True)
    finally:
        env.stop(work, cluster)

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 2)

    rollout = round(statistics.median(r["dry_run_steps_s"].get("rollout", 0.0) for r in runs), 2)
    summary = {"rows": args.rows, "repeat": args.repeat, "baseline_s": med("baseline_s"),
               "dry_run_s": med("dry_run_s"), "scratch_cluster_s": med("scratch_cluster_s"),
               "dry_run_rollout_s": rollout,
               "target_s": TARGET_S, "meets_target": med("dry_run_s") < TARGET_S}
    h.write_json(OUT_JSON, {"machine": h.machine_info(), "summary": summary, "runs": runs})
    h.print_table(f"dry-run of the demo spec, {args.rows} rows (median of {args.repeat})",
                  [("figure", "left"), ("seconds", "right")],
                  [["production run, warm cluster (ingest..register; baseline)",
                    f"{summary['baseline_s']:.1f}"],
                   ["dry-run, every step + its own cluster", f"{summary['dry_run_s']:.1f}"],
                   ["  of which: starting the scratch cluster", f"{summary['scratch_cluster_s']:.1f}"],
                   ["  of which: rollout (Serve replica, infra validation)", f"{rollout:.1f}"],
                   ["target", f"< {TARGET_S:.0f}"]],
                  caption=f"results: {OUT_JSON}")
    return 0 if summary["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
