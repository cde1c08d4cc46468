"""Benchmark: each data step's two executors side by side, to place the thresholds of
mlplatform.runtime.placement (where a step stops running in the job's own process).

    .venv/bin/python benchmarks/placement.py                               # all steps, default sizes
    .venv/bin/python benchmarks/placement.py --steps validate --rows 10000,1000000
    .venv/bin/python benchmarks/placement.py --steps train --train-rows 10000,200000

For each step and input size the same platform function runs once with `local` (the job's
own process) and once on a local Ray (num_cpus=2, started here, warmed up by one untimed
call of each executor), on demo data (mlplatform.data.synthetic, the demo's 17 columns):

- ingest:   `ingest_step._write_snapshot` (read the batch's Parquet files, write one
            snapshot, commit its manifest) with execution.placement local / cluster;
- validate: `validation.validate_parquet(..., local=)` with the demo's inferred schema, valid
            rows written as parts;
- featurize: `features.steps.compute_view(..., local=)` for the demo's customer_activity view
            (its transformation plus 1d/7d window aggregations);
- train:    `training.local_search.run_search_local` + `final_fit_local` vs Tune's
            `run_search` + `final_fit`: the demo's search (4 random trials of
            HistGradientBoostingClassifier, max_iter 100) on `--train-rows` rows.

The table shows both wall times and which is faster; the JSON goes to
benchmarks/results/placement.json. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.placement`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_JSON = HERE / "results" / "placement.json"
STEPS = ("ingest", "validate", "featurize", "train")


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _demo(work: Path, rows: int) -> tuple[Any, list[str]]:
    """`rows` demo rows as Parquet files of at most 500k rows (as a day's batch would come)."""
    from mlplatform.data.synthetic import DemoDataConfig, generate_day

    folder = work / f"data-{rows}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    day, left = 1, rows
    while left > 0:
        n = min(left, 500_000)
        cfg = DemoDataConfig(days=99, rows_per_day=n, entities=max(1000, rows // 20), seed=11)
        path = folder / f"day-{day:03d}.parquet"
        if not path.exists():
            generate_day(cfg, day).to_parquet(path, index=False)
        paths.append(str(path))
        left -= n
        day += 1
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem(), paths


class Bench:
    def __init__(self, work: Path):
        from mlplatform.services import Services
        from mlplatform.settings import load_settings
        from mlplatform.spec_loader import load_spec

        self.work = work
        env = {"PLATFORM_HOME": str(work / "home")}
        self.settings = load_settings(env=env)
        self.services = Services(self.settings)
        self.spec = load_spec(ROOT / "jobs" / "examples" / "demo.yaml", env=env)

    def ingest(self, rows: int, local: bool) -> float:
        from mlplatform.data import ingest_step
        from mlplatform.pipeline import StepContext
        from mlplatform.spec import ExecutionSpec

        fs, paths = _demo(self.work, rows)
        spec = self.spec.model_copy(deep=True)
        spec.execution = ExecutionSpec(placement="local" if local else "cluster")
        ctx = StepContext(spec, self.services, f"bench-{time.time_ns()}", "ingest", lambda m: None)
        out = tempfile.mkdtemp(dir=self.work)
        return _timed(lambda: ingest_step._write_snapshot(ctx, fs, paths, out, fs, "0" * 64))

    def _schema(self, fs: Any, paths: list[str]) -> Any:
        import pyarrow.dataset as pads

        from mlplatform.data.schema import infer_schema

        return infer_schema(pads.dataset(paths[:1], format="parquet", filesystem=fs).head(50_000))[0]

    def validate(self, rows: int, local: bool) -> float:
        from mlplatform.data.validation import validate_parquet

        fs, paths = _demo(self.work, rows)
        schema = self._schema(fs, paths)
        out = tempfile.mkdtemp(dir=self.work)
        return _timed(lambda: validate_parquet(paths, fs, schema, valid_out=out, local=local))

    def featurize(self, rows: int, local: bool) -> float:
        from mlplatform.data.validation import validate_parquet
        from mlplatform.features.steps import compute_view
        from mlplatform.features.store import FeatureStore

        fs, paths = _demo(self.work, rows)
        batch = self.work / f"valid-{rows}"
        if not batch.exists():
            validate_parquet(paths, fs, self._schema(fs, paths), valid_out=str(batch), local=True)
        view = FeatureStore(self.spec, self.settings).views["customer_activity"]
        return _timed(lambda: compute_view(view, str(batch), [], local=local))

    def train(self, rows: int, local: bool) -> float:
        import numpy as np

        from mlplatform.data.synthetic import DemoDataConfig, generate_day
        from mlplatform.training import local_search
        from mlplatform.training.data import SplitData, search_split
        from mlplatform.training.search import final_fit, run_search

        cfg = DemoDataConfig(days=99, rows_per_day=rows, entities=max(1000, rows // 20), seed=11)
        df = generate_day(cfg, 1)
        X = df.drop(columns=["churned", "customer_id", "event_ts"])
        y = df["churned"].to_numpy().astype(np.int64)
        model = self.spec.model
        data = search_split(X, y, model.search.validation_fraction)  # type: ignore[union-attr]
        everything = {"": SplitData(X, y)}
        if local:
            def work() -> None:
                best = local_search.run_search_local(model, data).best_config
                local_search.final_fit_local(model, everything, best)
        else:
            store = tempfile.mkdtemp(dir=self.work)

            def work() -> None:
                best = run_search(model, data, storage_path=store, name=f"s{time.time_ns()}").best_config
                final_fit(model, everything, best, storage_path=store, name=f"f{time.time_ns()}")
        return _timed(work)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--rows", default="10000,100000,1000000,2000000")
    parser.add_argument("--train-rows", default="10000,50000,200000,500000")
    parser.add_argument("--object-store-mb", type=int, default=1024)
    args = parser.parse_args()
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        print(f"--steps {','.join(unknown)}: not one of {','.join(STEPS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "platform"))
    sys.path.insert(0, str(ROOT))
    os.environ["RAY_AUTH_MODE"] = "disabled"  # a private Ray of this process, whatever ~/.ray holds
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    machine = h.machine_info()
    rows_out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlp-placement-") as tmp:
        work = Path(tmp)
        ray.init(num_cpus=2, object_store_memory=args.object_store_mb * 1024 * 1024,
                 include_dashboard=False, logging_level="ERROR", _temp_dir=str(work / "ray"))
        ray.data.DataContext.get_current().enable_progress_bars = False
        bench = Bench(work)
        try:
            for step in steps:
                sizes = [int(x) for x in (args.train_rows if step == "train" else args.rows).split(",")]
                fn = getattr(bench, step)
                fn(sizes[0] if step != "train" else 2000, True)  # warm-up: imports, workers, caches
                fn(sizes[0] if step != "train" else 2000, False)
                for n in sizes:
                    local = fn(n, True)
                    cluster = fn(n, False)
                    rows_out.append({"step": step, "rows": n, "local_s": local, "cluster_s": cluster,
                                     "ratio_local_to_cluster": local / cluster,
                                     "load_avg": list(os.getloadavg())})
                    print(f"{step} {n:>9,} rows: local {local:7.2f}s  cluster {cluster:7.2f}s", flush=True)
        finally:
            ray.shutdown()
    h.write_json(OUT_JSON, {"machine": machine, "results": rows_out})
    h.print_table(
        "placement: the same step in the job's process (local) and as Ray tasks (cluster)",
        [("step", "left"), ("rows", "right"), ("local s", "right"), ("cluster s", "right"),
         ("local / cluster", "right"), ("faster", "left")],
        [[r["step"], h.fmt_int(r["rows"]), h.fmt_float(r["local_s"]), h.fmt_float(r["cluster_s"]),
          h.fmt_float(r["ratio_local_to_cluster"]), "local" if r["local_s"] <= r["cluster_s"] else "cluster"]
         for r in rows_out],
        caption=f"{machine.get('cpu_count_logical')} CPUs, load at start {machine.get('load_avg_at_start')}; "
                f"thresholds in platform/mlplatform/runtime/placement.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
