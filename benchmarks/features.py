"""Benchmark: the feature store: point-in-time joins, online lookups, materialisation.

    .venv/bin/python benchmarks/features.py                       # 10M feature rows, all variants
    .venv/bin/python benchmarks/features.py --feature-rows 1000000 --entity-rows 10000
    .venv/bin/python benchmarks/features.py --variants pit,sqlite --repeat 3

Data (generated once with numpy, reused): `--feature-rows` rows of one feature view (int64
entity ids over `--entities` entities, event times spread uniformly over `--days` days as
datetime64[us], 8 float64 features, 1% NaN in the last one), written with
`OfflineStore.write` (Parquet, one file per date) under benchmarks/results/data/features/,
and `--entity-rows` entity rows (random entities, times in the same range). TTL 7 days.

Variants, each in its own subprocess so that its memory can be measured alone:

Part 1, point-in-time join of the entity rows against every feature row:
- pandas:  the baseline: pd.merge_asof(left.sort_values(ts), right.sort_values(ts), on=ts,
           by=entity, tolerance=ttl, direction="backward"), sorting included, in memory.
- pit:     mlplatform.features.pit.point_in_time_join, in memory.
- offline: mlplatform.features.store.join_view: reads the date partitions the rows can see
           from the offline store on disk, then point_in_time_join (read + join timed).
- ray:     mlplatform.features.store._join_with_ray: the same as Ray Data tasks over time
           chunks, on a local Ray (num_cpus=2) started inside the subprocess.
  The in-memory variants load the feature rows from the offline store before the timed run
  (untimed); every variant first does an untimed warm-up join. The values of every variant
  are compared with the pandas baseline (NaN == NaN).

Parts 2 and 3, the online store (sqlite: SQLiteOnlineStore in-process; redis: a real
redis-server started by the subprocess on a free port with --save '' --appendonly no):
- materialisation: OfflineStore.read (every row) + latest_per_entity + rows_to_payloads +
  store.write into a fresh store; rows/s of offline rows read. Beside it, a plain bulk write
  of the same payloads (SQLite: INSERT in one transaction; Redis: pipelined HSET, no Lua).
- lookups: `--single-reads` reads of 1 entity and `--batch-reads` reads of `--batch-size`
  entities through read_online (the user path: TTL check, statuses), each timed with
  time.perf_counter_ns; beside it the bare store.read of the same number of keys.
- a consistency check: read_online at time T against point_in_time_join at T for a sample of
  entities (the online store and the offline join must agree).

Speed is only measured, never asserted. Results: benchmarks/results/features.json and rich
tables; per-variant logs under benchmarks/results/logs/.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.features`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_DIR = RESULTS / "data" / "features"
LOG_DIR = RESULTS / "logs"
OUT_JSON = RESULTS / "features.json"
JOIN_VARIANTS = ("pandas", "pit", "offline", "ray")
ONLINE_VARIANTS = ("sqlite", "redis")
VARIANTS = JOIN_VARIANTS + ONLINE_VARIANTS
RAY_VARIANTS = ("ray",)
GEN_VERSION = 2  # 2: the offline store commits each write with a manifest (older data reads as empty)

PIPELINE = "bench"
VIEW = "v"
ENTITY = "entity_id"
TS = "event_ts"
FEATURES = [f"f{i}" for i in range(8)]
NAN_FEATURE = "f7"  # 1% NaN: exercises NaN handling in the join and NULL_VALUE online
TTL_DAYS = 7
START = dt.datetime(2025, 1, 1)
REDIS_SERVER = "/usr/bin/redis-server"
JOIN_TARGET_S = 5.0
LOOKUP_TARGET_P99_US = 1000.0
WARMUP_ENTITY_ROWS = 1000
CHECK_ENTITIES = 2000
BUSY_CORES = 0.25  # other processes using this many cores during a timed run: flagged in the notes


# --- the data -----------------------------------------------------------------------------


def make_view() -> Any:
    from mlplatform.features.definitions import FeatureView

    spec = {"name": VIEW, "ttl": f"{TTL_DAYS}d", "features": [{"name": f} for f in FEATURES]}
    return FeatureView(pipeline=PIPELINE, name=VIEW, entity=ENTITY, timestamp_column=TS,
                       created_timestamp_column=None, ttl_s=TTL_DAYS * 86400, transformation=None,
                       features=list(FEATURES), spec=spec, version="bench")


def data_name(args: argparse.Namespace) -> str:
    return (f"features_v{GEN_VERSION}_rows{args.feature_rows}_ent{args.entities}_erows{args.entity_rows}"
            f"_days{args.days}_seed{args.seed}")


def generate(args: argparse.Namespace) -> int:
    """Child mode: write the feature rows (offline store layout) and the entity rows."""
    import pandas as pd

    from mlplatform.features.offline_store import OfflineStore

    root = Path(args.data)
    n, span_us = args.feature_rows, args.days * 86400 * 1_000_000
    start_us = np.datetime64(START, "us")
    rng = np.random.default_rng([args.seed, 0])
    df = pd.DataFrame({ENTITY: rng.integers(0, args.entities, n, dtype=np.int64),
                       TS: start_us + rng.integers(0, span_us, n).astype("timedelta64[us]")})
    values = rng.standard_normal((len(FEATURES), n))
    values[-1][rng.random(n) < 0.01] = np.nan
    for name, col in zip(FEATURES, values, strict=True):
        df[name] = col
    del values
    result = OfflineStore(str(root), PIPELINE).write(make_view(), df, write_id="gen")
    del df
    rng = np.random.default_rng([args.seed, 1])
    rows = pd.DataFrame({ENTITY: rng.integers(0, args.entities, args.entity_rows, dtype=np.int64),
                         TS: start_us + rng.integers(0, span_us, args.entity_rows).astype("timedelta64[us]")})
    rows.to_parquet(root / "entity_rows.parquet", index=False)
    print(json.dumps({"files": len(result.files), "dates": len(result.dates)}))
    return 0


def ensure_data(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The data directory (offline store root + entity rows), generated if absent."""
    name = data_name(args)
    path = DATA_DIR / name
    manifest = DATA_DIR / f"{name}.json"
    if manifest.exists() and path.is_dir():
        return path, None
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    began = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate", "--data", str(path),
           "--feature-rows", str(args.feature_rows), "--entities", str(args.entities),
           "--entity-rows", str(args.entity_rows), "--days", str(args.days), "--seed", str(args.seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    seconds = time.perf_counter() - began
    info = json.loads(out[-1]) if out else {}
    manifest.write_text(json.dumps({"feature_rows": args.feature_rows, "entities": args.entities,
                                    "entity_rows": args.entity_rows, "days": args.days, "seed": args.seed,
                                    "features": FEATURES, "generated_s": round(seconds, 1), **info},
                                   indent=2))
    return path, seconds


# --- part 1: the point-in-time join ------------------------------------------------------------


def _pandas_join(left: Any, right: Any) -> Any:
    import pandas as pd

    return pd.merge_asof(left.sort_values(TS), right.sort_values(TS), on=TS, by=ENTITY,
                         tolerance=pd.Timedelta(days=TTL_DAYS), direction="backward")


def worker_join(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from mlplatform.features.offline_store import OfflineStore
    from mlplatform.features.pit import point_in_time_join
    from mlplatform.features.store import _join_with_ray, join_view

    variant = args.worker
    view = make_view()
    offline = OfflineStore(str(args.data), PIPELINE)
    rows = pd.read_parquet(Path(args.data) / "entity_rows.parquet")
    extra: dict[str, Any] = {}
    features_df = None
    if variant in ("pandas", "pit"):
        h.emit_phase("load_start")
        began = time.perf_counter()
        features_df = offline.read(view)
        extra["load_s"] = round(time.perf_counter() - began, 3)
        extra["feature_rows_in_memory"] = len(features_df)
        extra["feature_frame_mb"] = round(features_df.memory_usage(deep=True).sum() / h.MB, 1)
        h.emit_phase("load_end")
    if variant == "ray":
        import ray

        ray.init(address="local", num_cpus=2, object_store_memory=args.object_store_mb * h.MB,
                 include_dashboard=False, _temp_dir=args.ray_temp_dir)
        ray.data.DataContext.get_current().enable_progress_bars = False
        extra["ray"] = ray.__version__

    def run(entity_rows: Any, feats: Any) -> tuple[np.ndarray, dict[str, int]]:
        """One join; returns the feature values in entity-row order and the match counts."""
        if variant == "pandas":
            left = entity_rows.assign(_row=np.arange(len(entity_rows)))
            h.emit_phase("timed_start")
            began = time.perf_counter()
            merged = _pandas_join(left, feats)
            took = time.perf_counter() - began
            h.emit_phase("timed_end")
            merged = merged.sort_values("_row")  # back to the entity rows' order, untimed
            values = merged[FEATURES].to_numpy(dtype="float64")
            matched = int(merged[FEATURES[0]].notna().sum())
            return values, {"seconds": took, "rows": len(merged), "matched": matched,
                            "not_matched": len(merged) - matched}
        h.emit_phase("timed_start")
        began = time.perf_counter()
        if variant == "pit":
            out, stats = point_in_time_join(entity_rows, feats, entity=ENTITY, entity_ts=TS, feature_ts=TS,
                                            created_ts=None, ttl=view.ttl, columns=FEATURES)
        elif variant == "offline":
            out, stats = join_view(offline, view, entity_rows, TS, FEATURES)
        else:
            out, stats = _join_with_ray(offline, view, entity_rows, TS, FEATURES)
        took = time.perf_counter() - began
        h.emit_phase("timed_end")
        return out[FEATURES].to_numpy(dtype="float64"), {"seconds": took, **stats.model_dump()}

    # Warm-up: imports, code paths, Ray workers and (offline / ray) every date partition once.
    h.emit_phase("warmup_start")
    began = time.perf_counter()
    warm_rows = rows.iloc[:WARMUP_ENTITY_ROWS]
    if variant == "pandas":
        pd.merge_asof(warm_rows.sort_values(TS), features_df.iloc[:100_000].sort_values(TS),
                      on=TS, by=ENTITY, tolerance=pd.Timedelta(days=TTL_DAYS), direction="backward")
    elif variant == "pit":
        point_in_time_join(warm_rows, features_df.iloc[:100_000], entity=ENTITY,
                           entity_ts=TS, feature_ts=TS, created_ts=None, ttl=view.ttl, columns=FEATURES)
    elif variant == "offline":
        join_view(offline, view, warm_rows, TS, FEATURES)
    else:
        _join_with_ray(offline, view, warm_rows, TS, FEATURES)
    warmup_s = time.perf_counter() - began
    h.emit_phase("warmup_end")

    seconds: list[float] = []
    values: np.ndarray | None = None
    stats: dict[str, Any] = {}
    for _ in range(args.repeat):
        values, stats = run(rows, features_df)
        seconds.append(stats.pop("seconds"))
    assert values is not None
    np.save(args.out_values, values)
    return {"status": "ok", "seconds": seconds, "warmup_s": warmup_s, "entity_rows": len(rows),
            "stats": stats, **extra}


# --- parts 2 and 3: the online store -----------------------------------------------------------


def _die_with_parent() -> None:
    """In the redis-server child before exec: SIGTERM when the benchmark subprocess dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(scratch: Path) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(scratch), "--pidfile", str(scratch / "redis.pid"),
         "--logfile", str(scratch / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 15
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    while True:
        try:
            client.ping()
            client.close()
            return proc, port
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}: "
                                   f"{h.tail(scratch / 'redis.log', 5)}") from None
            time.sleep(0.05)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentiles(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1000.0
    p50, p90, p99, p999 = np.percentile(a, [50, 90, 99, 99.9])
    return {"n": len(a), "p50_us": round(p50, 1), "p90_us": round(p90, 1), "p99_us": round(p99, 1),
            "p999_us": round(p999, 1), "max_us": round(float(a.max()), 1),
            "mean_us": round(float(a.mean()), 1)}


def _plain_write(variant: str, payloads: list[tuple[str, int, int, str]], scratch: Path,
                 port: int | None) -> float:
    """The baseline write: the same payloads, written without the conditional upsert."""
    if variant == "sqlite":
        import sqlite3

        path = scratch / "plain.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("""CREATE TABLE plain (pipeline TEXT NOT NULL, view TEXT NOT NULL, entity TEXT NOT NULL,
            event_us INTEGER NOT NULL, created_us INTEGER NOT NULL, payload TEXT NOT NULL,
            PRIMARY KEY (pipeline, view, entity)) WITHOUT ROWID""")
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO plain VALUES (?, ?, ?, ?, ?, ?)",
                         [(PIPELINE, VIEW, *row) for row in payloads])
        conn.execute("COMMIT")
        took = time.perf_counter() - began
        conn.close()
        for p in scratch.glob("plain.db*"):
            p.unlink()
        return took
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, db=1)
    began = time.perf_counter()
    for i in range(0, len(payloads), 1000):
        pipe = client.pipeline(transaction=False)
        for key, event, created, payload in payloads[i:i + 1000]:
            pipe.hset(f"plain:{PIPELINE}:{VIEW}:{key}", mapping={"e": event, "c": created, "v": payload})
        pipe.execute()
    took = time.perf_counter() - began
    client.flushdb()
    client.close()
    return took


def worker_online(args: argparse.Namespace) -> dict[str, Any]:
    variant = args.worker
    scratch = Path(args.scratch)
    redis_proc = None
    port = None
    if variant == "redis":
        if not Path(REDIS_SERVER).exists():
            return {"status": "skipped", "reason": f"{REDIS_SERVER} not found: no Redis rows"}
        redis_proc, port = start_redis(scratch)
    try:
        return _online(args, variant, scratch, port)
    finally:
        if redis_proc is not None:
            stop_redis(redis_proc)


def _open_store(variant: str, scratch: Path, port: int | None) -> Any:
    from mlplatform.features.online_store import RedisOnlineStore, SQLiteOnlineStore

    if variant == "sqlite":
        for p in scratch.glob("online.db*"):
            p.unlink()
        return SQLiteOnlineStore(str(scratch / "online.db"))
    store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0")
    store._redis.flushdb()
    return store


def _online(args: argparse.Namespace, variant: str, scratch: Path, port: int | None) -> dict[str, Any]:
    import pandas as pd

    from mlplatform.features.definitions import parse_refs
    from mlplatform.features.offline_store import OfflineStore
    from mlplatform.features.online_store import rows_to_payloads
    from mlplatform.features.pit import MATCHED, STATUS, latest_per_entity, point_in_time_join
    from mlplatform.features.store import read_online

    view = make_view()
    views = {view.name: view}
    refs = parse_refs([f"{view.name}:*"], views)
    offline = OfflineStore(str(args.data), PIPELINE)
    at = START + dt.timedelta(days=args.days)  # the end of the data: ~70% of entities within the TTL

    # -- materialisation: `repeat` runs, each into a fresh store ---------------------------------
    runs: list[dict[str, float]] = []
    store = None
    df = payloads = None
    for _ in range(args.repeat):
        if store is not None:
            store.close()
        df = payloads = None
        store = _open_store(variant, scratch, port)
        h.emit_phase("timed_start")
        t0 = time.perf_counter()
        df = offline.read(view)
        t1 = time.perf_counter()
        latest = latest_per_entity(df, view.entity, view.timestamp_column, view.created_timestamp_column)
        t2 = time.perf_counter()
        payloads = rows_to_payloads(view, latest)
        t3 = time.perf_counter()
        written = store.write(view, payloads)
        t4 = time.perf_counter()
        h.emit_phase("timed_end")
        runs.append({"seconds": t4 - t0, "read_s": t1 - t0, "latest_s": t2 - t1, "payloads_s": t3 - t2,
                     "write_s": t4 - t3, "rows_read": len(df), "entities_written": written})
        del latest
    assert store is not None and df is not None and payloads is not None
    h.emit_phase("baseline_start")
    plain_write_s = _plain_write(variant, payloads, scratch, port)
    h.emit_phase("baseline_end")
    entities = np.asarray([int(p[0]) for p in payloads], dtype=np.int64)
    del payloads
    extra: dict[str, Any] = {}
    if variant == "redis":
        info = store._redis.info("memory")
        extra["redis_used_memory_mb"] = round(info["used_memory"] / h.MB, 1)
        extra["redis_server"] = store._redis.info("server")["redis_version"]
    else:
        extra["sqlite_file_mb"] = round(sum(p.stat().st_size for p in scratch.glob("online.db*")) / h.MB, 1)

    # -- lookups -------------------------------------------------------------------------------
    rng = np.random.default_rng([args.seed, 2])
    single = rng.choice(entities, args.single_reads).tolist()
    batches = [rng.choice(entities, args.batch_size, replace=False).tolist() for _ in range(args.batch_reads)]
    single_s = [str(e) for e in single]
    batches_s = [[str(e) for e in b] for b in batches]
    h.emit_phase("lookup_start")
    for e in single[:2000]:  # warm-up: code paths, page cache, connection
        read_online(store, views, refs, [e], at=at)
    for b in batches[:100]:
        read_online(store, views, refs, b, at=at)
    perf = time.perf_counter_ns
    lat: dict[str, list[int]] = {k: [] for k in ("single_online", "single_store", "batch_online",
                                                 "batch_store")}
    statuses: dict[str, int] = {}
    for _ in range(args.repeat):
        for e in single:
            t = perf()
            vecs = read_online(store, views, refs, [e], at=at)
            lat["single_online"].append(perf() - t)
            s = vecs[0].statuses[FEATURES[0]]
            statuses[s] = statuses.get(s, 0) + 1
        for key in single_s:
            t = perf()
            store.read(view, [key])
            lat["single_store"].append(perf() - t)
        for b in batches:
            t = perf()
            read_online(store, views, refs, b, at=at)
            lat["batch_online"].append(perf() - t)
        for keys in batches_s:
            t = perf()
            store.read(view, keys)
            lat["batch_store"].append(perf() - t)
    h.emit_phase("lookup_end")

    # -- the online store against the offline join at the same time ---------------------------------
    sample = rng.choice(entities, min(CHECK_ENTITIES, len(entities)), replace=False)
    rows = pd.DataFrame({ENTITY: sample, TS: np.full(len(sample), np.datetime64(at, "us"))})
    joined, _ = point_in_time_join(rows, df, entity=ENTITY, entity_ts=TS, feature_ts=TS, created_ts=None,
                                   ttl=view.ttl, columns=FEATURES)
    vecs = read_online(store, views, refs, sample.tolist(), at=at)
    online_vals = np.array([[np.nan if v.values[f] is None else v.values[f] for f in FEATURES] for v in vecs],
                           dtype=np.float64)
    offline_vals = joined[FEATURES].to_numpy(dtype="float64")
    value_diff = ~((online_vals == offline_vals) | (np.isnan(online_vals) & np.isnan(offline_vals)))
    online_ok = np.array([v.statuses[FEATURES[0]] in ("PRESENT", "NULL_VALUE") for v in vecs])
    status_diff = online_ok != (joined[STATUS].to_numpy() == MATCHED)
    check = {"entities": len(sample), "at": at.isoformat(), "rows_differ": int(value_diff.any(axis=1).sum()),
             "status_differ": int(status_diff.sum()), "matched_offline": int(online_ok.sum())}
    store.close()

    best = min(runs, key=lambda r: r["seconds"])
    return {"status": "ok", "seconds": [r["seconds"] for r in runs],
            "materialise": {k: round(v, 3) if isinstance(v, float) else v for k, v in best.items()},
            "plain_write_s": round(plain_write_s, 3),
            "lookups": {k: percentiles(v) for k, v in lat.items()}, "single_statuses": statuses,
            "batch_size": args.batch_size, "consistency": check, **extra}


WORKERS = {**{v: worker_join for v in JOIN_VARIANTS}, **{v: worker_online for v in ONLINE_VARIANTS}}


def worker_main(args: argparse.Namespace) -> int:
    return h.run_worker(lambda: WORKERS[args.worker](args))


# --- the parent: data, subprocesses, report ---------------------------------------------------


def _stop_leftover_redis(scratch: Path) -> None:
    """The redis-server this variant started, if it outlived its parent (named by its pid file)."""
    try:
        pid = int((scratch / "redis.pid").read_text().strip())
        proc = psutil.Process(pid)
        if "redis" in proc.name():
            proc.terminate()
            proc.wait(timeout=10)
    except (OSError, ValueError, psutil.Error):
        pass


def run_variant(variant: str, args: argparse.Namespace, data: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    for key in ("RAY_ADDRESS", "PLATFORM_RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    scratch = Path(tempfile.mkdtemp(prefix=f"scratch-{variant}-", dir=DATA_DIR))
    values = scratch / "values.npy"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--data", str(data),
           "--repeat", str(args.repeat), "--object-store-mb", str(args.object_store_mb),
           "--scratch", str(scratch), "--out-values", str(values), "--seed", str(args.seed),
           "--days", str(args.days), "--single-reads", str(args.single_reads),
           "--batch-reads", str(args.batch_reads), "--batch-size", str(args.batch_size)]
    try:
        m, res, record = h.run_variant(variant, cmd, env=env, ray=variant in RAY_VARIANTS,
                                       interval=args.sample_interval,
                                       log_path=LOG_DIR / f"features-{variant}.log")
    finally:
        _stop_leftover_redis(scratch)
    if record["status"] != "ok":
        shutil.rmtree(scratch, ignore_errors=True)
        return record
    seconds = res.pop("seconds")
    windows = m.windows("timed_start", "timed_end")
    timed = m.peak(windows)
    record.update(
        seconds=round(min(seconds), 3), seconds_all=[round(s, 3) for s in seconds],
        peak_mem_mb=timed.get("mem_mb"),
        memory={"timed_runs": timed, "whole_subprocess": m.peak(),
                "just_before_first_timed_run": m.before(windows[0][0]) if windows else {},
                "kernel_maxrss_mb_child_only": m.kernel_maxrss_mb,
                "sampler_cpu_s": m.sampler_cpu_s, "sample_interval_s": args.sample_interval},
        cpu_timed_runs=m.cpu(windows), result=res,
    )
    lookups = m.windows("lookup_start", "lookup_end")
    if lookups:
        record["cpu_lookups"] = m.cpu(lookups)
    if "warmup_s" in res:
        record["warmup_s"] = round(res.pop("warmup_s"), 3)
    if variant in JOIN_VARIANTS and values.exists():
        record["values"] = np.load(values)
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def compare_join(records: dict[str, dict[str, Any]]) -> None:
    """Every join variant's values against the pandas baseline, NaN == NaN."""
    base = records.get("pandas", {}).get("values")
    for variant in JOIN_VARIANTS:
        rec = records.get(variant)
        if rec is None or "values" not in rec:
            continue
        ours = rec.pop("values")
        if variant == "pandas" or base is None:
            continue
        if ours.shape != base.shape:
            rec["vs_pandas"] = {"agrees": False, "reason": f"shape {ours.shape} vs {base.shape}"}
            continue
        same = (ours == base) | (np.isnan(ours) & np.isnan(base))
        per_col = {f: int((~same[:, i]).sum()) for i, f in enumerate(FEATURES)}
        rows = int((~same).any(axis=1).sum())
        rec["vs_pandas"] = {"agrees": rows == 0, "rows_differ": rows, "values_differ_per_feature": per_col,
                            "nan_rows_ours": int(np.isnan(ours[:, 0]).sum()),
                            "nan_rows_pandas": int(np.isnan(base[:, 0]).sum())}


def _table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], caption: str) -> None:
    """h.print_table with rich markup escaped: notes hold brackets (reasons, lists)."""
    from rich.markup import escape

    h.print_table(escape(title), columns, [[escape(c) for c in row] for row in rows], caption=escape(caption))


def _busy(rec: dict[str, Any], window: str = "cpu_timed_runs") -> str:
    other = rec.get(window, {}).get("other_cores", 0.0)
    return f"; MACHINE BUSY: other processes used {other:.1f} cores during the timed run" \
        if other >= BUSY_CORES else ""


def join_notes(variant: str, rec: dict[str, Any], args: argparse.Namespace) -> str:
    if rec["status"] != "ok":
        return f"{rec['status'].upper()}: {rec.get('reason', '')}"
    res = rec["result"]
    st = res["stats"]
    best = f"best of {args.repeat}; " if args.repeat > 1 else ""
    before = rec["memory"].get("just_before_first_timed_run", {}).get("mem_mb")
    parts = [best.rstrip("; ")] if best else []
    if variant == "pandas":
        parts.append(f"matched {st['matched']:,} of {st['rows']:,}")
    else:
        parts.append(f"matched {st['matched']:,} / expired {st['expired']:,} / missing {st['missing']:,}")
    if variant in ("pandas", "pit"):
        held = f", {before:,.0f} MB before the run" if before is not None else ""
        parts.append(f"in memory: {res['feature_frame_mb']:,.0f} MB frame loaded untimed in "
                     f"{res['load_s']:.1f}s{held}")
    elif variant == "offline":
        parts.append("read of the date partitions + join, page cache warm")
    else:
        parts.append("2 Ray Data tasks (one per time chunk), each reads its partitions; warm workers")
    cmp = rec.get("vs_pandas")
    if cmp is not None:
        if cmp.get("agrees"):
            parts.append("values agree with pandas (NaN == NaN)")
        else:
            parts.append(f"MISMATCH vs pandas: {cmp.get('rows_differ', cmp.get('reason'))} rows differ "
                         f"(per feature {cmp.get('values_differ_per_feature')})")
    return "; ".join(parts) + _busy(rec)


def print_join_table(records: dict[str, dict[str, Any]], args: argparse.Namespace,
                     machine: dict[str, Any]) -> None:
    base = records.get("pandas", {})
    base_s = base.get("seconds") if base.get("status") == "ok" else None
    base_mem = base.get("peak_mem_mb") if base.get("status") == "ok" else None
    rows = []
    for variant in JOIN_VARIANTS:
        rec = records.get(variant)
        if rec is None:
            continue
        s = rec.get("seconds")
        x = round(base_s / s, 2) if s and base_s else None
        rec["x_vs_pandas"] = x
        rows.append([variant, h.fmt_float(s), h.fmt_float(base_s), h.fmt_float(x) + ("x" if x else ""),
                     h.fmt_int(rec.get("peak_mem_mb")), h.fmt_int(base_mem),
                     ("yes" if s <= JOIN_TARGET_S else "NO") if s is not None else "-",
                     join_notes(variant, rec, args)])
    _table(
        f"Point-in-time join: {args.entity_rows:,} entity rows x {args.feature_rows:,} feature rows "
        f"({len(FEATURES)} features, {args.entities:,} entities, {args.days} days, TTL {TTL_DAYS}d; "
        f"{machine['cpu_count_logical']} CPUs, {machine['memory_total_mb'] / 1024:.0f} GiB)",
        [("variant", "left"), ("seconds", "right"), ("pandas s", "right"), ("speed vs pandas", "right"),
         ("peak MB", "right"), ("pandas peak MB", "right"), (f"<= {JOIN_TARGET_S:g} s", "center"),
         ("notes", "left")],
        rows,
        caption="pandas: pd.merge_asof(left.sort_values(ts), right.sort_values(ts), on=ts, by=entity, "
                "tolerance=ttl, direction='backward'), sorts included. speed vs pandas > 1: faster. "
                "peak MB: private anonymous memory + /dev/shm of the variant's processes, sampled every "
                f"{args.sample_interval * 1000:.0f} ms during the timed runs (in-memory variants include "
                f"the loaded feature frame). Details: {args.out}",
    )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def print_online_tables(records: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    rows = []
    for variant in ONLINE_VARIANTS:
        rec = records.get(variant)
        if rec is None:
            continue
        if rec["status"] != "ok":
            rows.append([variant, "-", "-", "-", "-", "-", "-", "-", f"{rec['status'].upper()}: "
                         f"{rec.get('reason', '')}"])
            continue
        res = rec["result"]
        for kind, n in (("single", 1), ("batch", res["batch_size"])):
            online, store = res["lookups"][f"{kind}_online"], res["lookups"][f"{kind}_store"]
            note = f"{online['n']:,} reads of {n} random materialised entit{'y' if n == 1 else 'ies'}"
            if kind == "single":
                st = res["single_statuses"]
                note += "; statuses " + ", ".join(f"{k} {v:,}" for k, v in sorted(st.items()))
                if variant == "sqlite":
                    note += (f"; target p99 <= {LOOKUP_TARGET_P99_US / 1000:g} ms: "
                             + ("met" if online["p99_us"] <= LOOKUP_TARGET_P99_US else "NOT met"))
            note += f"; p99.9 {_us(online['p999_us'])} us, max {_us(online['max_us'])} us"
            rows.append([variant, str(n), _us(online["p50_us"]), _us(online["p99_us"]), _us(store["p50_us"]),
                         _us(store["p99_us"]),
                         h.fmt_float(online["p50_us"] / store["p50_us"]) + "x" if store["p50_us"] else "-",
                         _us(online["mean_us"]), note + _busy(rec, "cpu_lookups")])
    if rows:
        _table(
            "Online lookups through read_online (TTL check + statuses), in-process client; "
            "baseline: the bare store.read of the same keys",
            [("store", "left"), ("entities", "right"), ("p50 us", "right"), ("p99 us", "right"),
             ("store.read p50", "right"), ("store.read p99", "right"), ("p50 vs store.read", "right"),
             ("mean us", "right"), ("notes", "left")],
            rows,
            caption="time.perf_counter_ns around each call; one thread; read_online(online, {view: view}, "
                    "parse_refs(['v:*']), entities, at=end of the data). Redis: a local redis-server "
                    "(--save '' --appendonly no) over TCP on 127.0.0.1, redis-py without hiredis.",
        )
    rows = []
    for variant in ONLINE_VARIANTS:
        rec = records.get(variant)
        if rec is None or rec["status"] != "ok":
            continue
        res = rec["result"]
        mat = res["materialise"]
        rps = mat["rows_read"] / rec["seconds"]
        write_rps = mat["entities_written"] / mat["write_s"]
        plain_rps = mat["entities_written"] / res["plain_write_s"]
        rec["materialise_rows_per_s"] = round(rps)
        cons = res["consistency"]
        agree = (cons["rows_differ"] == 0 and cons["status_differ"] == 0)
        note = (f"read {mat['read_s']:.1f}s + latest_per_entity {mat['latest_s']:.1f}s + rows_to_payloads "
                f"{mat['payloads_s']:.1f}s + write {mat['write_s']:.1f}s"
                + (f"; best of {args.repeat}" if args.repeat > 1 else "")
                + (f"; Redis used_memory {res['redis_used_memory_mb']:,.0f} MB"
                   if "redis_used_memory_mb" in res else f"; SQLite file {res['sqlite_file_mb']:,.0f} MB")
                + f"; online vs offline join at {cons['at'][:10]} on {cons['entities']:,} entities: "
                + ("agree" if agree else f"MISMATCH: {cons['rows_differ']} value rows, "
                                         f"{cons['status_differ']} statuses differ"))
        rows.append([variant, h.fmt_int(mat["rows_read"]), h.fmt_int(mat["entities_written"]),
                     h.fmt_float(rec["seconds"], 1), h.fmt_int(rps), h.fmt_int(write_rps),
                     h.fmt_int(plain_rps), h.fmt_int(rec.get("peak_mem_mb")), note + _busy(rec)])
    if rows:
        _table(
            "Materialisation: OfflineStore.read + latest_per_entity + rows_to_payloads + store.write "
            "(fresh store); baseline: a plain bulk write of the same payloads",
            [("store", "left"), ("offline rows", "right"), ("entities", "right"), ("seconds", "right"),
             ("rows/s", "right"), ("store.write entities/s", "right"), ("plain write entities/s", "right"),
             ("peak MB", "right"), ("notes", "left")],
            rows,
            caption="rows/s: offline rows read / total seconds. plain write: SQLite INSERT (no upsert) in "
                    "one transaction; Redis pipelined HSET, 1000 per round trip (no Lua). peak MB: private "
                    "anonymous memory of the subprocess and its children (redis-server included) during "
                    "the materialisation runs.",
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--feature-rows", type=int, default=10_000_000)
    p.add_argument("--entity-rows", type=int, default=100_000)
    p.add_argument("--entities", type=int, default=None,
                   help="distinct entities (default: feature rows / 10)")
    p.add_argument("--days", type=int, default=60, help="event times spread over this many days")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    p.add_argument("--repeat", type=int, default=1,
                   help="timed runs per variant; the best is reported (lookups: all samples pooled)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single-reads", type=int, default=20_000, help="timed 1-entity online reads")
    p.add_argument("--batch-reads", type=int, default=2_000, help="timed multi-entity online reads")
    p.add_argument("--batch-size", type=int, default=100, help="entities per multi-entity read")
    p.add_argument("--object-store-mb", type=int, default=1024, help="Ray object store (ray variant)")
    p.add_argument("--sample-interval", type=float, default=0.05, help="memory sampling period, seconds")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out-values", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.entities is None:
        args.entities = max(1, args.feature_rows // 10)
    if args.generate:
        return generate(args)
    if args.worker:
        return worker_main(args)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    variants = [v for v in VARIANTS if v in variants]  # pandas first: the others are compared with it
    machine = h.machine_info()
    print(f"data: {args.feature_rows:,} feature rows ({args.entities:,} entities, {len(FEATURES)} features, "
          f"{args.days} days), {args.entity_rows:,} entity rows", flush=True)
    data, gen_s = ensure_data(args)
    size = sum(f.stat().st_size for f in data.rglob("*.parquet")) / h.MB
    print(f"  {data} ({size:,.0f} MB on disk, "
          f"{f'generated in {gen_s:.1f}s' if gen_s is not None else 'reused'})", flush=True)

    records: dict[str, dict[str, Any]] = {}
    for variant in variants:
        records[variant] = run_variant(variant, args, data)
    compare_join(records)
    for variant, rec in records.items():
        if variant in JOIN_VARIANTS:
            rec["notes"] = join_notes(variant, rec, args)

    if any(v in JOIN_VARIANTS for v in variants):
        print_join_table(records, args, machine)
    if any(v in ONLINE_VARIANTS for v in variants):
        print_online_tables(records, args)

    memory_method = (
        "peak_mem_mb: the highest value, over samples taken every "
        f"{args.sample_interval * 1000:.0f} ms by the parent during the timed runs only (join: the join "
        "call; online: the materialisation runs), of the variant's private anonymous memory (sum of "
        "RssAnon = resident - shared pages from /proc/PID/statm over its processes) plus the /dev/shm files "
        "its processes hold open (Ray's object store), counted once. Processes: the variant's subprocess "
        "and all its descendants (redis-server, started by the subprocess, included; Ray's local cluster "
        "too), plus for ray every process naming the Ray temp dir. The in-memory join variants (pandas, "
        "pit) hold the feature frame, loaded before the timed run: memory.just_before_first_timed_run "
        "gives that footprint."
    )
    payload = {
        "benchmark": "features",
        "config": {"feature_rows": args.feature_rows, "entity_rows": args.entity_rows,
                   "entities": args.entities, "days": args.days, "features": FEATURES,
                   "nan_feature": f"{NAN_FEATURE}: 1% NaN", "ttl_days": TTL_DAYS, "seed": args.seed,
                   "repeat": args.repeat, "object_store_mb": args.object_store_mb,
                   "single_reads": args.single_reads, "batch_reads": args.batch_reads,
                   "batch_size": args.batch_size, "data": str(data),
                   "data_generated_s": round(gen_s, 1) if gen_s is not None else None,
                   "data_mb_on_disk": round(size, 1), "variants": variants,
                   "join_target_s": JOIN_TARGET_S,
                   "lookup_target_p99_us_sqlite_1_entity": LOOKUP_TARGET_P99_US},
        "machine": machine,
        "packages": h.package_versions(["pandas", "numpy", "pyarrow", "ray", "redis", "hiredis", "psutil"]),
        "memory_method": memory_method,
        "variants": records,
    }
    h.write_json(args.out, payload)
    print(f"results: {args.out}", flush=True)
    return 0 if all(r["status"] != "failed" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
