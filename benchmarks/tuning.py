"""Benchmark: hyperparameter search of a scikit-learn estimator: Ray Tune vs joblib vs Optuna.

    .venv/bin/python benchmarks/tuning.py                         # 200k rows, 32 trials, all variants
    .venv/bin/python benchmarks/tuning.py --rows 20000 --trials 8 # quick smoke run
    .venv/bin/python benchmarks/tuning.py --variants joblib,mlplatform-tune-random

The same search everywhere: `--trials` trials of HistGradientBoostingClassifier (max_iter 100,
early_stopping=False, random_state = --seed) inside the platform's preprocessing Pipeline
(mlplatform.training.estimators.build_estimator: median imputer + standard scaler on the numeric
columns), on `--rows` x 20 features from sklearn.datasets.make_classification (fixed seed;
generated once and cached as Parquet under benchmarks/results/data/tuning/). Validation: one
fixed holdout, the last 20% of the rows; the score is roc_auc on it. The space, sampled:
learning_rate loguniform(0.02, 0.3), max_leaf_nodes randint(8, 64), min_samples_leaf
randint(10, 100), l2_regularization uniform(0, 1) (randint's high excluded, as in Ray Tune).

Variants, each in its own subprocess so that its memory and processes are its own:
- joblib:  the baseline: sklearn RandomizedSearchCV(pipeline, n_iter=trials, scoring="roc_auc",
           cv=PredefinedSplit(holdout), n_jobs=-1, refit=False). joblib's loky workers run
           one OpenMP thread each (joblib limits them to cpu_count // n_jobs).
- optuna:  a plain Optuna study (TPESampler(seed)), n_trials=trials, study.optimize(n_jobs=
           --optuna-jobs threads); with more than one job the subprocess gets OMP_NUM_THREADS=
           cpus // jobs, so that the fits do not oversubscribe the cores.
- mlplatform-tune-random / mlplatform-tune-optuna / mlplatform-tune-asha:
           mlplatform.training.search.run_search (Ray Tune) with search.algorithm "random" /
           "optuna" / "random" + scheduler "asha" (warm_start grows max_iter, a report every 10
           iterations up to 100), on a local Ray started in the subprocess (num_cpus=2, a small
           object store, its own temp dir), after an untimed warm-up task per CPU.

Timed: the search call alone (data loaded, pool / cluster started and the search library
imported before). Each variant runs --repeat times (default 3), the variants in turn, round by
round, so that a busy spell of the shared machine hits all of them alike; the table gives the
median run with the spread (min-max). Speed is only measured, never asserted. Results:
benchmarks/results/tuning.json and a rich table; per-run logs under benchmarks/results/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.tuning`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_DIR = RESULTS / "data" / "tuning"
LOG_DIR = RESULTS / "logs"
OUT_JSON = RESULTS / "tuning.json"
TUNE_VARIANTS = ("mlplatform-tune-random", "mlplatform-tune-optuna", "mlplatform-tune-asha")
VARIANTS = ("joblib", "optuna", *TUNE_VARIANTS)
GEN_VERSION = 1

ESTIMATOR = "sklearn.ensemble.HistGradientBoostingClassifier"
N_FEATURES = 20
LABEL = "y"
HOLDOUT = 0.2  # the last 20% of the rows
MAX_ITER = 100
REPORT_EVERY = 10
# (type, low, high); randint's high is excluded (Ray Tune's tune.randint, scipy.stats.randint).
SPACE: dict[str, tuple[str, float, float]] = {
    "learning_rate": ("loguniform", 0.02, 0.3),
    "max_leaf_nodes": ("randint", 8, 64),
    "min_samples_leaf": ("randint", 10, 100),
    "l2_regularization": ("uniform", 0.0, 1.0),
}
TARGET_X_JOBLIB = 1.05  # the full Tune searches: wall time (median) <= 1.05x joblib's
TARGET_ASHA_X_FULL = 0.6  # ASHA: wall time <= 0.6x the full Tune search (random) ...
TARGET_ASHA_SCORE = 0.002  # ... with a best score at most this much below it
BUSY_CORES = 0.25  # other processes using this many cores during a timed run: flagged in the notes


# --- the data -----------------------------------------------------------------------------


def data_path(rows: int, seed: int) -> Path:
    return DATA_DIR / f"tuning_v{GEN_VERSION}_rows{rows}_feat{N_FEATURES}_seed{seed}.parquet"


def ensure_data(rows: int, seed: int) -> tuple[Path, float | None]:
    """The cached table (20 float64 features f00..f19 + the 0/1 label), generated if absent."""
    path = data_path(rows, seed)
    if path.exists():
        return path, None
    import pandas as pd
    from sklearn.datasets import make_classification

    began = time.perf_counter()
    X, y = make_classification(n_samples=rows, n_features=N_FEATURES, n_informative=10, n_redundant=4,
                               n_clusters_per_class=3, flip_y=0.03, class_sep=0.8, random_state=seed)
    df = pd.DataFrame(X, columns=[f"f{i:02d}" for i in range(N_FEATURES)])
    df[LABEL] = y.astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path, time.perf_counter() - began


def load_split(path: Path) -> tuple[Any, np.ndarray, Any, np.ndarray]:
    """X_train, y_train, X_val, y_val: the holdout is the last HOLDOUT share of the rows."""
    import pandas as pd

    df = pd.read_parquet(path)
    y = df.pop(LABEL).to_numpy()
    n_val = int(round(len(df) * HOLDOUT))
    cut = len(df) - n_val
    return df.iloc[:cut].reset_index(drop=True), y[:cut], df.iloc[cut:].reset_index(drop=True), y[cut:]


# --- the search, the same for every variant -----------------------------------------------------


def model_spec(args: argparse.Namespace, algorithm: str = "random", scheduler: str = "fifo") -> Any:
    from mlplatform.spec import ModelSpec, ParamDistribution, SearchSpec

    space = {name: ParamDistribution(type=kind, low=lo, high=hi) for name, (kind, lo, hi) in SPACE.items()}
    return ModelSpec(task="classification", estimator=ESTIMATOR,
                     params={"max_iter": MAX_ITER, "early_stopping": False}, metric="roc_auc",
                     metric_mode="max", seed=args.seed,
                     search=SearchSpec(space=space, num_samples=args.trials, algorithm=algorithm,
                                       scheduler=scheduler, max_iterations=MAX_ITER,
                                       report_every=REPORT_EVERY))


def scipy_space(prefix: str) -> dict[str, Any]:
    from scipy import stats

    out: dict[str, Any] = {}
    for name, (kind, lo, hi) in SPACE.items():
        if kind == "loguniform":
            out[prefix + name] = stats.loguniform(lo, hi)
        elif kind == "randint":
            out[prefix + name] = stats.randint(int(lo), int(hi))
        else:
            out[prefix + name] = stats.uniform(lo, hi - lo)
    return out


def optuna_params(trial: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (kind, lo, hi) in SPACE.items():
        if kind == "loguniform":
            out[name] = trial.suggest_float(name, lo, hi, log=True)
        elif kind == "randint":
            out[name] = trial.suggest_int(name, int(lo), int(hi) - 1)
        else:
            out[name] = trial.suggest_float(name, lo, hi)
    return out


def _round(config: dict[str, Any]) -> dict[str, Any]:
    """A config with the pipeline prefix dropped, floats rounded, in SPACE's order."""
    out = {k.split("__")[-1]: (round(float(v), 4) if isinstance(v, float | np.floating) else
                               int(v) if isinstance(v, np.integer) else v) for k, v in config.items()}
    order = list(SPACE)
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


# --- the variants (child side) -------------------------------------------------------------------


def worker_joblib(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    from mlplatform.training.estimators import MODEL_STEP, build_estimator

    h.emit_phase("load_start")
    X_train, y_train, X_val, y_val = load_split(args.data)
    import pandas as pd

    X = pd.concat([X_train, X_val], ignore_index=True)
    y = np.concatenate([y_train, y_val])
    fold = np.r_[np.full(len(y_train), -1), np.zeros(len(y_val), dtype=int)]  # -1: always train
    pipe = build_estimator(model_spec(args), X_train)
    h.emit_phase("load_end")
    search = RandomizedSearchCV(pipe, scipy_space(MODEL_STEP + "__"), n_iter=args.trials, scoring="roc_auc",
                                cv=PredefinedSplit(fold), n_jobs=-1, refit=False, random_state=args.seed,
                                error_score="raise")
    h.emit_phase("timed_start")
    began = time.perf_counter()
    search.fit(X, y)
    seconds = time.perf_counter() - began
    h.emit_phase("timed_end")
    res = search.cv_results_
    trial_s = res["mean_fit_time"] + res["mean_score_time"]
    return {"status": "ok", "seconds": seconds, "best_score": float(search.best_score_),
            "best_config": _round(search.best_params_), "trials": len(res["params"]),
            "trial_s_sum": round(float(trial_s.sum()), 2), "pipeline_steps": list(pipe.named_steps),
            "scores": [round(float(s), 5) for s in res["mean_test_score"]]}


def worker_optuna(args: argparse.Namespace) -> dict[str, Any]:
    import optuna
    from sklearn.metrics import roc_auc_score

    from mlplatform.training.estimators import build_estimator

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    h.emit_phase("load_start")
    X_train, y_train, X_val, y_val = load_split(args.data)
    model = model_spec(args, algorithm="optuna")
    build_estimator(model, X_train)  # checks the spec once, as the other variants do
    h.emit_phase("load_end")

    def objective(trial: Any) -> float:
        pipe = build_estimator(model, X_train, optuna_params(trial))
        pipe.fit(X_train, y_train)
        return float(roc_auc_score(y_val, pipe.predict_proba(X_val)[:, 1]))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    h.emit_phase("timed_start")
    began = time.perf_counter()
    study.optimize(objective, n_trials=args.trials, n_jobs=args.optuna_jobs)
    seconds = time.perf_counter() - began
    h.emit_phase("timed_end")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"status": "ok", "seconds": seconds, "best_score": float(study.best_value),
            "best_config": _round(study.best_params), "trials": len(done),
            "trial_s_sum": round(sum(t.duration.total_seconds() for t in done if t.duration), 2),
            "n_jobs": args.optuna_jobs, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "scores": [round(float(t.value), 5) for t in done]}


def worker_tune(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from mlplatform.training.search import SplitData, run_search
    except Exception as exc:  # the module is written in parallel and may not exist yet
        return {"status": "skipped", "reason": f"mlplatform.training.search cannot be imported: {exc!r}"}
    import ray

    algorithm = "optuna" if args.worker == "mlplatform-tune-optuna" else "random"
    scheduler = "asha" if args.worker == "mlplatform-tune-asha" else "fifo"
    h.emit_phase("load_start")
    X_train, y_train, X_val, y_val = load_split(args.data)
    model = model_spec(args, algorithm=algorithm, scheduler=scheduler)
    data = SplitData(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)
    h.emit_phase("load_end")

    # Trials write checkpoints with tempfile (ASHA: one per report); TMPDIR inside the run's
    # temp dir makes the harness remove them with it, and lets us count what is left behind.
    tmp = Path(args.ray_temp_dir) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)  # inherited by the raylet, so by the Ray workers
    tempfile.tempdir = None
    h.emit_phase("ray_init_start")
    began = time.perf_counter()
    ray.init(address="local", num_cpus=2, object_store_memory=args.object_store_mb * h.MB,
             include_dashboard=False, _temp_dir=args.ray_temp_dir)

    @ray.remote(num_cpus=1)
    def _warm() -> int:
        return os.getpid()

    ray.get([_warm.remote() for _ in range(2)])  # the idle workers Ray prestarts, up and imported
    ray_init_s = time.perf_counter() - began
    # The search library, imported untimed as RandomizedSearchCV and optuna are for theirs
    # (0.5 s on this machine, once per process).
    began = time.perf_counter()
    from ray import tune  # noqa: F401
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: F401
    from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: F401
    if algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    tune_import_s = time.perf_counter() - began
    h.emit_phase("ray_init_end")
    storage = Path(args.ray_temp_dir) / "tune"  # inside the run's temp dir: the harness removes it
    try:
        h.emit_phase("timed_start")
        began = time.perf_counter()
        result = run_search(model, data, storage_path=str(storage), name="bench")
        seconds = time.perf_counter() - began
        h.emit_phase("timed_end")
    finally:
        ray.shutdown()
    trial_s, reports, checkpoints = trial_folders(Path(result.path))
    left = list(tmp.iterdir())  # tempfile names: prefix + 8 random characters
    left_mb = sum(f.stat().st_size for p in left for f in ([p] if p.is_file() else p.rglob("*"))
                  if f.is_file()) / h.MB
    trials = list(result.trials)
    out: dict[str, Any] = {"status": "ok", "seconds": seconds, "best_score": float(result.best_score),
                           "best_config": _round(dict(result.best_config)), "trials": len(trials),
                           "run_search_wall_s": round(float(result.wall_s), 3),
                           "ray_init_s": round(ray_init_s, 3), "tune_import_s": round(tune_import_s, 3),
                           "trial_s_sum": round(trial_s, 2), "reports": reports, "checkpoints": checkpoints,
                           "algorithm": algorithm, "scheduler": scheduler,
                           "tmp_left": {"entries": len(left), "mb": round(left_mb, 1),
                                        "prefixes": sorted({p.name[:-8] for p in left})[:10]}}
    out["iterations"] = [t.iterations for t in trials]
    out["scores"] = [None if t.score is None else round(t.score, 5) for t in trials]
    failed = [t.error or t.status for t in trials if t.status != "TERMINATED" or t.score is None]
    if failed:
        out["failed_trials"] = {"count": len(failed), "errors": sorted(set(failed))[:5]}
    return out


def trial_folders(experiment: Path) -> tuple[float, int, int]:
    """From the trial folders Tune wrote: the trials' own time summed (time_total_s of each
    one's last result: from its start in the actor to its last report), the reports and
    the checkpoints."""
    seconds, reports, checkpoints = 0.0, 0, 0
    for result in experiment.glob("*/result.json"):
        lines = [line for line in result.read_text().splitlines() if line.strip()]
        if lines:
            seconds += float(json.loads(lines[-1]).get("time_total_s") or 0.0)
        reports += len(lines)
        checkpoints += len(list(result.parent.glob("checkpoint_*")))
    return seconds, reports, checkpoints


WORKERS = {"joblib": worker_joblib, "optuna": worker_optuna, **{v: worker_tune for v in TUNE_VARIANTS}}


def worker_main(args: argparse.Namespace) -> int:
    return h.run_worker(lambda: WORKERS[args.worker](args))


# --- the parent: data, subprocesses, report ---------------------------------------------------


def run_variant(variant: str, args: argparse.Namespace, data: Path, run: int) -> dict[str, Any]:
    """One timed run of `variant` in its own subprocess (log: tuning-VARIANT[-rN].log)."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    for key in ("RAY_ADDRESS", "PLATFORM_RAY_ADDRESS", "RAY_AUTH_TOKEN", "OMP_NUM_THREADS"):
        env.pop(key, None)
    if variant == "optuna" and args.optuna_jobs > 1:  # threads: one OpenMP pool each, or they oversubscribe
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.optuna_jobs))
    # Ray starts its workers at nice 15 (RAY_worker_niceness), below every other process: on
    # this shared machine that alone made Tune runs up to 1.8x joblib's in the same round,
    # while joblib's workers run at 0. The trials run at 0 here too (no effect when the
    # machine is otherwise idle).
    env.setdefault("RAY_worker_niceness", "0")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--data", str(data),
           "--trials", str(args.trials), "--seed", str(args.seed), "--optuna-jobs", str(args.optuna_jobs),
           "--object-store-mb", str(args.object_store_mb)]
    log = LOG_DIR / (f"tuning-{variant}.log" if args.repeat == 1 else f"tuning-{variant}-r{run + 1}.log")
    m, res, record = h.run_variant(variant, cmd, env=env, ray=variant in TUNE_VARIANTS,
                                   interval=args.sample_interval, log_path=log)
    if record["status"] != "ok":
        return record
    windows = m.windows("timed_start", "timed_end")
    timed = m.peak(windows)
    record.update(
        seconds=round(res.pop("seconds"), 3), best_score=round(res.pop("best_score"), 5),
        trials=res.pop("trials"), best_config=res.pop("best_config"), peak_mem_mb=timed.get("mem_mb"),
        memory={"timed_run": timed, "whole_subprocess": m.peak(),
                "just_before_timed_run": m.before(windows[0][0]) if windows else {},
                "kernel_maxrss_mb_child_only": m.kernel_maxrss_mb,
                "sampler_cpu_s": m.sampler_cpu_s, "sample_interval_s": args.sample_interval},
        cpu_timed_run=m.cpu(windows), result=res,
    )
    return record


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant's runs as one record: the median run's details (by wall time; the lower of
    the two middle ones for an even count) with the medians and spreads of the numbers."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {**runs[0], "runs": runs}
    by_time = sorted(ok, key=lambda r: r["seconds"])
    rec = dict(by_time[(len(by_time) - 1) // 2])
    secs, scores = [r["seconds"] for r in ok], [r["best_score"] for r in ok]
    mems = [r["peak_mem_mb"] for r in ok if r.get("peak_mem_mb") is not None]
    cpus = [r["cpu_timed_run"]["variant_cpu_s"] for r in ok if r.get("cpu_timed_run")]
    others = [r["cpu_timed_run"]["other_cores"] for r in ok if r.get("cpu_timed_run")]
    rec.update(
        median_run=ok.index(rec) + 1, runs_ok=len(ok), runs_failed=len(runs) - len(ok),
        seconds=round(statistics.median(secs), 3), seconds_min=min(secs), seconds_max=max(secs),
        seconds_runs=secs, best_score_min=min(scores), best_score_max=max(scores), best_score_runs=scores,
        peak_mem_mb=round(statistics.median(mems), 1) if mems else None,
        peak_mem_mb_max=max(mems, default=None),
        cpu_s_median=round(statistics.median(cpus), 2) if cpus else None,
        busy_runs=sum(o >= BUSY_CORES for o in others), other_cores_runs=others,
        runs=[{k: v for k, v in r.items() if k != "best_config"} for r in runs])
    return rec


def compare(records: dict[str, dict[str, Any]]) -> None:
    """Ratios measured in this run, of the medians: every variant against joblib, ASHA against
    the full Tune search with the same (random) search algorithm; the ratios of the runs of
    the same round (paired) give the spread; and the targets."""
    def ok(name: str) -> dict[str, Any] | None:
        rec = records.get(name)
        return rec if rec is not None and rec.get("status") == "ok" else None

    def paired(rec: dict[str, Any], ref: dict[str, Any]) -> list[float]:
        return [round(a["seconds"] / b["seconds"], 3) for a, b in zip(rec["runs"], ref["runs"], strict=False)
                if a["status"] == "ok" and b["status"] == "ok"]

    base, full = ok("joblib"), ok("mlplatform-tune-random")
    for variant, rec in records.items():
        if rec.get("status") != "ok":
            continue
        if base is not None:
            rec["x_time_vs_joblib"] = round(rec["seconds"] / base["seconds"], 3)
            rec["x_time_vs_joblib_runs"] = paired(rec, base)
            rec["score_minus_joblib"] = round(rec["best_score"] - base["best_score"], 5)
            if variant in ("mlplatform-tune-random", "mlplatform-tune-optuna"):
                rec["target_met"] = rec["x_time_vs_joblib"] <= TARGET_X_JOBLIB
        if variant == "mlplatform-tune-asha" and full is not None:
            rec["x_time_vs_tune_random"] = round(rec["seconds"] / full["seconds"], 3)
            rec["x_time_vs_tune_random_runs"] = paired(rec, full)
            rec["score_minus_tune_random"] = round(rec["best_score"] - full["best_score"], 5)
            # the worst run's best score: ASHA's stops depend on the order trials finish in
            rec["worst_score_minus_tune_random"] = round(rec["best_score_min"] - full["best_score"], 5)
            rec["target_met"] = (rec["x_time_vs_tune_random"] <= TARGET_ASHA_X_FULL
                                 and rec["worst_score_minus_tune_random"] >= -TARGET_ASHA_SCORE)


def _busy(rec: dict[str, Any]) -> str:
    busy = rec.get("busy_runs") or 0
    if not busy:
        return ""
    others = ", ".join(f"{o:.1f}" for o in rec.get("other_cores_runs", []))
    return f"; MACHINE BUSY in {busy} of {len(rec['runs'])} runs: other processes used {others} cores"


def notes(variant: str, rec: dict[str, Any], args: argparse.Namespace) -> str:
    if rec["status"] != "ok":
        return f"{rec['status'].upper()}: {rec.get('reason', '')}"
    res = rec["result"]
    cfg = ", ".join(f"{k}={v}" for k, v in rec["best_config"].items())
    parts = [f"best: {cfg}"]
    if rec.get("runs_failed"):
        parts.append(f"{rec['runs_failed']} of {len(rec['runs'])} runs FAILED")
    if variant == "joblib":
        parts.append("RandomizedSearchCV(n_jobs=-1), 2 loky workers x 1 thread")
    elif variant == "optuna":
        omp = res["omp_num_threads"] or "unset"
        parts.append(f"TPE, n_jobs={res['n_jobs']} threads, OMP_NUM_THREADS={omp}")
    else:
        parts.append(f"run_search {res['run_search_wall_s']:.1f}s of it; untimed: ray.init + warm-up "
                     f"{res['ray_init_s']:.1f}s, Tune import {res.get('tune_import_s', 0):.1f}s")
        parts.append(f"{res.get('reports', '?')} reports, {res.get('checkpoints', '?')} checkpoints")
        left = res.get("tmp_left", {})
        if left.get("entries"):
            parts.append(f"the trials left {left['entries']} temp entries ({left['mb']:.0f} MB, "
                         f"{', '.join(left['prefixes'])}*) in TMPDIR")
        iters = [i for i in res.get("iterations") or [] if isinstance(i, int)]
        if variant == "mlplatform-tune-asha" and iters:
            stopped = {i: iters.count(i) for i in sorted(set(iters)) if i < MAX_ITER}
            parts.append(f"{sum(stopped.values())} of {len(iters)} trials stopped early "
                         f"({', '.join(f'{n} at {i}' for i, n in stopped.items())}); {sum(iters):,} of "
                         f"{len(iters) * MAX_ITER:,} boosting iterations trained")
        idle = rec["memory"].get("just_before_timed_run", {})
        if idle:
            parts.append(f"Ray idle before the search {idle['mem_mb']:,.0f} MB in "
                         f"{idle['processes']} processes")
    if "trial_s_sum" in res:
        parts.append(f"trial time summed {res['trial_s_sum']:.0f}s")
    if "failed_trials" in res:
        ft = res["failed_trials"]
        parts.append(f"{ft['count']} trials FAILED: {'; '.join(ft['errors'])[:300]}")
    if rec["trials"] != args.trials:
        parts.append(f"ONLY {rec['trials']} of {args.trials} trials reported")
    if len(rec.get("runs", [])) > 1:
        parts.append(f"details: run {rec['median_run']} of {len(rec['runs'])} (the median)")
    return "; ".join(parts) + _busy(rec)


def _spread(rec: dict[str, Any], key: str, digits: int = 1) -> str:
    """`median (min-max)` of a record's runs, or the one value."""
    value = rec.get(key)
    if value is None:
        return "-"
    lo, hi = rec.get(f"{key}_min"), rec.get(f"{key}_max")
    if lo is None or len(rec.get("runs", [])) < 2:
        return h.fmt_float(value, digits)
    return f"{value:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def _ratio(rec: dict[str, Any], key: str) -> str:
    x = rec.get(key)
    if x is None:
        return "-"
    runs = rec.get(f"{key}_runs") or []
    return f"{x:.2f}x" + (f" ({min(runs):.2f}-{max(runs):.2f})" if len(runs) > 1 else "")


def print_table(records: dict[str, dict[str, Any]], args: argparse.Namespace,
                machine: dict[str, Any]) -> None:
    from rich.markup import escape

    rows = []
    for variant, rec in records.items():
        target = rec.get("target_met")
        d_asha = rec.get("worst_score_minus_tune_random")
        asha = _ratio(rec, "x_time_vs_tune_random") + (f", {d_asha:+.4f}" if d_asha is not None else "")
        rows.append([variant, _spread(rec, "seconds"), _spread(rec, "best_score", 4),
                     h.fmt_int(rec.get("trials")), _ratio(rec, "x_time_vs_joblib"), asha,
                     "-" if target is None else ("yes" if target else "NO"),
                     h.fmt_float(rec.get("cpu_s_median"), 0),
                     h.fmt_int(rec.get("peak_mem_mb")), escape(notes(variant, rec, args))])
    n_train = args.rows - int(round(args.rows * HOLDOUT))
    runs = f"median of {args.repeat} runs (min-max); " if args.repeat > 1 else ""
    h.print_table(
        escape(f"Hyperparameter search: {args.trials} trials of HistGradientBoostingClassifier "
               f"(max_iter {MAX_ITER}) on {args.rows:,} rows x {N_FEATURES} features "
               f"({n_train:,} train / {args.rows - n_train:,} holdout), roc_auc; {runs}"
               f"{machine['cpu_count_logical']} CPUs, {machine['memory_total_mb'] / 1024:.0f} GiB"),
        [("variant", "left"), ("seconds", "right"), ("best roc_auc", "right"), ("trials", "right"),
         ("time vs joblib", "right"), ("ASHA / tune-random: time, worst score", "right"),
         ("target", "center"), ("CPU s", "right"), ("peak MB", "right"), ("notes", "left")],
        rows,
        caption=escape(
            "time vs joblib: the median seconds / joblib's median (< 1: faster), in brackets the range of "
            "the ratios of the runs of the same round. Targets: the full Tune "
            f"searches <= {TARGET_X_JOBLIB:g}x joblib; ASHA <= {TARGET_ASHA_X_FULL:g}x the time of "
            f"mlplatform-tune-random with a best score at most {TARGET_ASHA_SCORE:g} below it in every run. "
            "Timed: the search call only (data loaded, Ray started and Tune imported before). Search "
            "algorithms sample differently, so best scores differ by luck too. CPU s: CPU seconds the "
            "variant's processes used during the timed run (median); less sensitive than wall time to a busy "
            "machine, though not immune. peak MB (median): private anonymous memory + /dev/shm of the "
            f"variant's processes, sampled every {args.sample_interval * 1000:.0f} ms during the timed run. "
            f"Details: {args.out}"),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--trials", type=int, default=32, help="trials per search")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0, help="data, estimator random_state and samplers")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per variant; the median is reported")
    p.add_argument("--optuna-jobs", type=int, default=2,
                   help="threads of the optuna variant's study.optimize")
    p.add_argument("--object-store-mb", type=int, default=256, help="Ray object store (Tune variants)")
    p.add_argument("--sample-interval", type=float, default=0.05, help="memory sampling period, seconds")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    variants = [v for v in VARIANTS if v in variants]  # joblib first: the others are compared with it
    machine = h.machine_info()
    data, gen_s = ensure_data(args.rows, args.seed)
    print(f"data: {args.rows:,} rows x {N_FEATURES} features, {data} "
          f"({data.stat().st_size / h.MB:,.0f} MB, "
          f"{f'generated in {gen_s:.1f}s' if gen_s is not None else 'reused'})", flush=True)

    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for run in range(args.repeat):  # round by round: a busy spell hits every variant alike
        if args.repeat > 1:
            print(f"round {run + 1} of {args.repeat}", flush=True)
        for variant in variants:
            runs[variant].append(run_variant(variant, args, data, run))
    records = {variant: summarize(rs) for variant, rs in runs.items()}
    compare(records)
    for variant, rec in records.items():
        rec["notes"] = notes(variant, rec, args)
    print_table(records, args, machine)

    payload = {
        "benchmark": "tuning",
        "config": {"rows": args.rows, "features": N_FEATURES, "trials": args.trials, "seed": args.seed,
                   "repeat": args.repeat,
                   "data": str(data), "data_generated_s": round(gen_s, 1) if gen_s is not None else None,
                   "generator": "sklearn make_classification(n_features=20, n_informative=10, n_redundant=4, "
                                "n_clusters_per_class=3, flip_y=0.03, class_sep=0.8, random_state=seed)",
                   "estimator": ESTIMATOR, "fixed_params": {"max_iter": MAX_ITER, "early_stopping": False,
                                                            "random_state": args.seed},
                   "pipeline": "mlplatform.training.estimators.build_estimator (median imputer + standard "
                               "scaler on the numeric columns, then the estimator)",
                   "validation": f"holdout: the last {HOLDOUT:.0%} of the rows", "metric": "roc_auc",
                   "space": {k: {"type": t, "low": lo, "high": hi} for k, (t, lo, hi) in SPACE.items()},
                   "randint_high": "excluded", "asha": {"max_iterations": MAX_ITER,
                                                        "report_every": REPORT_EVERY},
                   "optuna_jobs": args.optuna_jobs, "object_store_mb": args.object_store_mb,
                   "variants": variants,
                   "targets": {"tune_x_time_vs_joblib_max": TARGET_X_JOBLIB,
                               "asha_x_time_vs_tune_random_max": TARGET_ASHA_X_FULL,
                               "asha_score_below_tune_random_max": TARGET_ASHA_SCORE}},
        "machine": machine,
        "packages": h.package_versions(["scikit-learn", "optuna", "ray", "joblib", "numpy", "pandas",
                                        "scipy", "psutil"]),
        "memory_method": "peak_mem_mb: as in validation.json / features.json (private anonymous memory "
                         "plus /dev/shm of the variant's process tree and, for Ray, of every process "
                         "naming its temp dir), over the timed search only.",
        "variants": records,
    }
    h.write_json(args.out, payload)
    print(f"results: {args.out}", flush=True)
    return 0 if all(r["status"] != "failed" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
