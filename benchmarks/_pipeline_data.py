"""The two data sets of the pipeline benchmark (benchmarks/pipeline.py) and their specs.

- `demo`: the platform's synthetic customer-event stream (mlplatform.data.synthetic), a churn
  classifier; the spec is jobs/examples/demo.yaml without its deploy section.
- `price`: house listings with a sale price, a regressor: 9 numeric, boolean and categorical
  features, the price from a nonlinear formula (log-linear in area, a decay with the distance to
  the centre, a U-shaped age effect, interactions with the property type) plus noise. Seeded
  numpy, so a day's file depends only on (seed, file number).

Each file is one day of data, `DAY_SPACING` days after the previous one: more than the training
window (30 days), every feature view's TTL and every aggregation window, so the training set of a
run holds exactly its own day and no earlier day feeds its features. A benchmark run thus
measures one day of the given size, however many days came before it in the same home.

Also the end of a benchmark's throwaway cluster (`stop`, `shielded`, `save_cluster_logs`): what
_demo_env.stop does, made safe against a second signal and a job driver that outlived its cluster.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

try:
    import _demo_env as env
    import _harness as h
except ImportError:  # imported as benchmarks._pipeline_data
    from benchmarks import _demo_env as env
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEMO_SPEC = ROOT / "jobs" / "examples" / "demo.yaml"
DATASETS = ("demo", "price")
DAY_SPACING = 40
BASE_DATE = dt.date(2026, 1, 1)
PRICE_SEED = 11
JsonDict = dict[str, Any]


def file_date(number: int) -> dt.date:
    """The date of the `number`-th file (1-based) of a data set."""
    return BASE_DATE + dt.timedelta(days=DAY_SPACING * (number - 1))


# --- specs ------------------------------------------------------------------------------


def search_section() -> JsonDict:
    """The demo's search (4 random trials over two dimensions), for both data sets."""
    return {"num_samples": 4, "algorithm": "random",
            "space": {"learning_rate": {"type": "loguniform", "low": 0.02, "high": 0.3},
                      "max_leaf_nodes": {"type": "randint", "low": 8, "high": 64}}}


def demo_spec() -> JsonDict:
    """jobs/examples/demo.yaml as written (`${PLATFORM_HOME}` left for the job to expand), without
    `deploy`: nothing is served, so no deploy or rollout work is measured."""
    raw = yaml.safe_load(DEMO_SPEC.read_text())
    raw.pop("deploy", None)
    raw.pop("triggers", None)
    raw["model"]["search"] = search_section()
    return raw


PRICE_FEATURES = ["living_area_m2", "lot_area_m2", "bedrooms", "year_built", "distance_km",
                  "condition", "region", "property_type", "has_garage"]


def price_spec() -> JsonDict:
    """The price pipeline: one feature view of the listing's own columns (no transformation: the
    allow-listed transformation modules are the platform's `jobs` package), a regressor."""
    return {
        "name": "price",
        "description": "Sale price of house listings (benchmarks/_pipeline_data.py).",
        "source": {"path": "${PLATFORM_HOME}/price/data", "format": "parquet",
                   "entity_column": "listing_id", "timestamp_column": "listed_at", "label_column": "price"},
        "validation": {"on_schema_break": "stop", "max_invalid_fraction": 0.05},
        "features": {"views": [{"name": "listing", "description": "What the listing says.", "ttl": "30d",
                                "features": PRICE_FEATURES}],
                     "services": [{"name": "pricing", "features": ["listing:*"]}],
                     "training_window": "30d"},
        "model": {"task": "regression", "feature_service": "pricing",
                  "estimator": "sklearn.ensemble.HistGradientBoostingRegressor", "metric": "rmse",
                  "params": {"max_iter": 100}, "seed": 0, "search": search_section()},
        "evaluation": {"test_fraction": 0.2, "split": "time",
                       "thresholds": [{"metric": "r2", "min_value": 0.5}],
                       "slices": ["region", "property_type"], "min_slice_rows": 200},
    }


def spec(dataset: str, placement: str | None = None) -> JsonDict:
    raw = demo_spec() if dataset == "demo" else price_spec()
    if placement:  # the lead's `execution` section (mlplatform.runtime.placement), when asked for
        raw["execution"] = {"placement": placement}
    return raw


def write_spec(path: Path, raw: JsonDict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def source_dir(home: Path, dataset: str) -> Path:
    """The spec's source.path under a PLATFORM_HOME (both specs use `${PLATFORM_HOME}/<name>/data`)."""
    return home / dataset / "data"


# --- data -------------------------------------------------------------------------------


def write_file(dataset: str, folder: Path, rows: int, number: int) -> Path:
    """The `number`-th day of `dataset` with `rows` rows, as one Parquet file in `folder`."""
    if dataset == "demo":
        from mlplatform.data.synthetic import DemoDataConfig, write_day

        # Day `number` of the stream (its seed), dated file_date(number): start is moved so.
        start = file_date(number) - dt.timedelta(days=number - 1)
        cfg = DemoDataConfig(days=1, rows_per_day=rows, entities=max(50, rows * 4 // 15), start=start)
        return Path(write_day(folder, cfg, number).path)
    df = price_day(rows, number)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"listings_{file_date(number).isoformat()}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp)
    tmp.replace(path)
    return path


REGIONS = ["centre", "inner", "suburb", "rural"]
REGION_P = [0.15, 0.3, 0.4, 0.15]
REGION_BASE = {"centre": 9.35, "inner": 9.15, "suburb": 8.9, "rural": 8.55}  # log EUR per m2^0.85
REGION_KM = {"centre": (1.5, 0.8), "inner": (3.0, 1.6), "suburb": (4.0, 3.0), "rural": (4.0, 7.0)}
TYPES = ["apartment", "townhouse", "house"]
TYPE_P = [0.5, 0.2, 0.3]
CONDITIONS = ["poor", "fair", "good", "excellent"]
CONDITION_P = [0.08, 0.27, 0.45, 0.2]
CONDITION_EFFECT = {"poor": -0.22, "fair": -0.08, "good": 0.0, "excellent": 0.11}


def price_day(rows: int, number: int) -> pd.DataFrame:
    """One day of listings: a realistic-looking price with a learnable but noisy structure."""
    rng = np.random.default_rng([PRICE_SEED, number])
    n = rows
    date = file_date(number)
    kind = rng.choice(TYPES, n, p=TYPE_P)
    region = rng.choice(REGIONS, n, p=REGION_P)
    is_apt, is_house = kind == "apartment", kind == "house"
    # Sizes by type; houses further out are bigger.
    shape = np.array([REGION_KM[r] for r in region])
    distance = rng.gamma(shape[:, 0], shape[:, 1]).round(2)
    area = rng.lognormal(np.where(is_apt, 4.2, np.where(is_house, 4.95, 4.65)) + 0.004 * distance, 0.3)
    bedrooms = np.clip(np.round(area / 28 + rng.normal(0, 0.7, n)), 1, 8).astype("int64")
    lot = np.where(is_apt, np.nan, rng.lognormal(np.where(is_house, 6.4, 5.2) + 0.02 * distance, 0.5))
    year = np.clip(np.round(2024 - rng.gamma(1.6, 28, n)), 1850, 2024)
    condition = rng.choice(CONDITIONS, n, p=CONDITION_P)
    garage = rng.uniform(size=n) < np.where(is_apt, 0.15, np.where(is_house, 0.8, 0.55))
    age = date.year - year
    # The price: log-linear in the area, a convex decay with distance, new-build and historic
    # premiums around a mid-age dip, the lot's value for houses only, a penalty for cramped rooms.
    log_p = (np.array([REGION_BASE[r] for r in region]) + 0.85 * np.log(area)
             + np.where(is_house, 0.08, np.where(is_apt, 0.0, 0.03))
             + np.array([CONDITION_EFFECT[c] for c in condition])
             - 0.28 * np.log1p(distance) - 0.004 * distance
             + 0.16 * np.exp(-age / 8) - 0.0025 * np.minimum(age, 60)
             + 0.12 / (1 + np.exp(-(age - 95) / 6))
             + np.where(is_apt, 0.0, 0.07 * np.log1p(np.nan_to_num(lot) / 200))
             + 0.05 * garage - 0.05 * np.maximum(bedrooms - area / 22, 0)
             + rng.normal(0, 0.13, n))
    price = np.round(np.exp(log_p), -2)
    seconds = np.sort(rng.uniform(0, 86400, n))
    df = pd.DataFrame({
        "listing_id": [f"l{number:04d}-{i:07d}" for i in range(n)],
        "listed_at": (pd.Timestamp(date) + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us]"),
        "living_area_m2": area.round(1),
        "lot_area_m2": np.round(lot, 0),
        "bedrooms": bedrooms,
        "year_built": year.astype("float64"),
        "distance_km": distance,
        "condition": condition,
        "region": region,
        "property_type": kind,
        "has_garage": garage,
        "price": price,
    })
    # Missing values as listings have them: no year for some, a condition nobody filled in.
    df.loc[rng.uniform(size=n) < 0.03, "year_built"] = np.nan
    df["condition"] = df["condition"].where(rng.uniform(size=n) >= 0.02, None)
    return df


# --- the throwaway cluster's end ----------------------------------------------------------


def stop_job(jobs: Any, job_id: str, timeout_s: float = 60) -> str:
    """Stop a job whose CLI gave up on it (the job still RUNNING), so that the next run does not
    meet it on the cluster; returns how it ended."""
    try:
        jobs.stop(job_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = jobs.status(job_id).status
            if status in ("STOPPED", "SUCCEEDED", "FAILED"):
                return str(status)
            time.sleep(1)
        return "still running"
    except Exception as exc:  # noqa: BLE001 - the cluster itself may be what failed
        return f"{type(exc).__name__}: {exc}"[:300]


def save_cluster_logs(cluster: JsonDict, dest: Path) -> Path | None:
    """After a failed run: the cluster's own logs (dashboard, job drivers, GCS and raylet) are
    copied to `dest` before the cluster and its temp dir are removed."""
    logs = Path(cluster["temp_dir"]) / "session_latest" / "logs"
    if not logs.is_dir():
        return None
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in logs.iterdir():
        if (f.is_file() and f.name.startswith(("dashboard", "job-driver", "gcs_server", "raylet"))
                and f.stat().st_size < 20 * 1024 * 1024):
            shutil.copy2(f, dest / f.name)
    return dest


@contextmanager
def shielded() -> Iterator[None]:
    """Clean-up that a second Ctrl-C or SIGTERM must not cut short: `timeout` signals the whole
    process group (the benchmark gets the signal twice), as a terminal's Ctrl-C does."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def stop(work: Path, cluster: JsonDict | None) -> None:
    """_demo_env.stop (the cluster named by its temp dir, the work dir), then whatever of this run
    outlived it: a job driver whose supervisor died first (its command line names the work dir),
    a cluster process that ignored the first signal."""
    from mlplatform.runtime.local import _terminate

    try:
        env.stop(work, cluster)
    finally:
        marks = [str(work)] + ([cluster["temp_dir"]] if cluster else [])
        strays = [p for mark in marks for p in h.stray_processes(mark) if p.pid != os.getpid()]
        if strays:
            _terminate(strays, timeout=10)
            print(f"stopped {len(strays)} process(es) left of this run", flush=True)
        if cluster:
            shutil.rmtree(cluster["temp_dir"], ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
