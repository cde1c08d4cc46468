"""Benchmark: data validation + statistics + drift of a 10M x 20 table, three ways.

    .venv/bin/python benchmarks/validation.py                     # 10M rows, all variants
    .venv/bin/python benchmarks/validation.py --rows 1000000 --variants single,pandera

Variants, each in its own subprocess so that its memory can be measured alone:

- single:  one process: a pyarrow.dataset scan of the Parquet files, decoded by the main
           thread (categoricals read dictionary-encoded; pyarrow's threaded decode used more
           CPU and was slower on 2 cores), and pyarrow.compute / numpy per record batch in 2
           worker threads (both release the GIL). Checks + statistics + drift.
- pandera: pandas.read_parquet + pandera.pandas DataFrameSchema(...).validate(lazy=True).
           Checks only: pandera computes no statistics and no drift.
- ray:     mlplatform.data.validation.validate_parquet (what the pipeline's validate step runs):
           Ray tasks of whole row groups (num_cpus=1, at most 2 per CPU in flight) that read,
           check and return a small partial each, merged by the driver in file order; on a
           local Ray started inside the subprocess (num_cpus=2), after an untimed warm-up run.
- ray-dataset: validate_dataset on ray.data.read_parquet (Ray Data's reader and map_batches).

The checks (same semantics everywhere): a type check per column; null fraction <=
max_null_fraction (dataset level); numeric min/max, categorical domain and one regex on the
id column (row level: a row failing any of them is quarantined; nulls fail none of them).
Statistics: count, nulls, mean, std (ddof=0), min, max, quantiles, a 20-bin histogram over
the schema's [min, max] (values outside clipped into the end bins), top-20 categories.
Drift against the statistics of a 1M-row reference table (same distribution, other seed):
PSI per numeric column from the histograms, Jensen-Shannon distance (base 2) per categorical
column over its top-20 categories + "other".

Results: benchmarks/results/validation.json and a rich table; per-variant logs under
benchmarks/results/logs/. Data: benchmarks/results/data/ (generated once, reused).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.validation`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_DIR = RESULTS / "data"
LOG_DIR = RESULTS / "logs"
OUT_JSON = RESULTS / "validation.json"
VARIANTS = ("single", "pandera", "ray", "ray-dataset")
SINGLE_PROCESS = ("single", "pandera")
GEN_VERSION = 1

ID_COLUMN = "event_id"
ID_REGEX = r"^u[0-9]{9}$"
N_BINS = 20
TOP_K = 20
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_SAMPLE = 250_000  # values per column kept for the quantiles of `single`
ANOMALY_RATE = 2e-5  # share of rows given an out-of-range / unseen / malformed value
PSI_EPS = 1e-4
BUSY_CORES = 0.25  # other processes using this many cores during a timed run: flagged in the notes


# --- the data -----------------------------------------------------------------------------

Gen = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class Num:
    name: str
    kind: str  # "int" | "float"
    gen: Gen
    lo: float
    hi: float
    null_frac: float = 0.0
    max_null: float = 0.0
    bad: tuple[float, ...] = ()  # out-of-range values injected at ANOMALY_RATE


@dataclass(frozen=True)
class Cat:
    name: str
    values: tuple[str, ...]
    p: tuple[float, ...]
    null_frac: float = 0.0
    max_null: float = 0.0
    unseen: tuple[str, ...] = ()  # values outside the domain injected at ANOMALY_RATE


def _zipf(k: int) -> tuple[float, ...]:
    w = 1.0 / np.arange(1, k + 1)
    return tuple((w / w.sum()).tolist())


def _ints(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).round().astype(np.int64)


# Nulls only in float and string columns: pandas reads an int64 column with nulls as
# float64, which would fail pandera's dtype check for a reason that is not the data's.
NUMERIC: tuple[Num, ...] = (
    Num("age", "int", lambda r, n: _ints(np.clip(r.normal(41, 13, n), 18, 90)), 18, 100, bad=(-1, 150)),
    Num("income", "float", lambda r, n: r.lognormal(10.8, 0.55, n).round(2), 0, 2e6, 0.02, 0.05,
        bad=(-100.0,)),
    Num("tenure_days", "int", lambda r, n: _ints(r.exponential(700, n)), 0, 20_000),
    Num("sessions_7d", "int", lambda r, n: r.poisson(5, n).astype(np.int64), 0, 200, bad=(1000,)),
    Num("avg_session_min", "float", lambda r, n: r.gamma(2.0, 6.0, n), 0, 600, 0.02, 0.05, bad=(1e4,)),
    # 3% nulls against a 2% limit: a dataset-level failure on purpose.
    Num("days_since_last_login", "float", lambda r, n: (r.geometric(0.1, n) - 1).astype(np.float64),
        0, 3650, 0.03, 0.02),
    Num("support_tickets_90d", "int", lambda r, n: r.poisson(0.3, n).astype(np.int64), 0, 100),
    Num("spend_30d", "float", lambda r, n: r.lognormal(3.5, 1.1, n).round(2), 0, 1e5, 0.02, 0.05,
        bad=(-1.0,)),
    Num("discount_rate", "float", lambda r, n: r.beta(2, 8, n), 0, 1, bad=(1.5,)),
    Num("credit_score", "int", lambda r, n: _ints(np.clip(r.normal(680, 70, n), 300, 850)), 300, 850,
        bad=(0,)),
    Num("latitude", "float", lambda r, n: r.uniform(-60, 70, n), -90, 90),
    Num("score", "float", lambda r, n: r.normal(0, 1, n), -10, 10, 0.01, 0.05),
)

CATEGORICAL: tuple[Cat, ...] = (
    Cat("country", ("US", "GB", "DE", "FR", "IN", "BR"), (0.38, 0.14, 0.13, 0.1, 0.15, 0.1),
        unseen=("XX",)),
    Cat("device", ("mobile", "desktop", "tablet"), (0.58, 0.34, 0.08), 0.02, 0.05,
        unseen=("smartwatch",)),
    Cat("plan", ("free", "basic", "premium"), (0.55, 0.3, 0.15)),
    Cat("channel", ("organic", "paid_search", "social", "email", "referral"),
        (0.4, 0.25, 0.15, 0.12, 0.08), 0.02, 0.05),
    Cat("os", ("android", "ios", "windows", "macos", "linux"), (0.4, 0.3, 0.18, 0.1, 0.02)),
    Cat("language", ("en", "es", "de", "fr", "pt", "hi", "ja", "zh", "ar", "ru"), _zipf(10)),
    Cat("city", tuple(f"city_{i:02d}" for i in range(40)), _zipf(40), unseen=("city_99",)),
)

COLUMN_NAMES = [ID_COLUMN] + [c.name for c in NUMERIC] + [c.name for c in CATEGORICAL]


def _anomalies(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, n, rng.binomial(n, ANOMALY_RATE))


def make_table(n: int, seed: int, part: int, first_id: int) -> Any:
    """`n` rows of the benchmark table; deterministic for (seed, part)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng([seed, part])
    arrays: dict[str, Any] = {}
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(first_id, first_id + n)), pa.string()),
                          width=9, padding="0")
    ids = pc.binary_join_element_wise("u", digits, "")
    bad = np.zeros(n, dtype=bool)
    bad[_anomalies(rng, n)] = True
    if bad.any():
        junk = [f"U-{i}" if i % 2 else f"u{i:09d}x" for i in range(int(bad.sum()))]
        ids = pc.replace_with_mask(ids, pa.array(bad), pa.array(junk))
    arrays[ID_COLUMN] = ids
    for col in NUMERIC:
        x = col.gen(rng, n)
        if col.bad:
            pos = _anomalies(rng, n)
            x[pos] = rng.choice(np.asarray(col.bad, dtype=x.dtype), len(pos))
        mask = rng.random(n) < col.null_frac if col.null_frac else None
        arrays[col.name] = pa.array(x, mask=mask)
    for cat in CATEGORICAL:
        idx = rng.choice(len(cat.values), n, p=np.asarray(cat.p) / sum(cat.p)).astype(np.int32)
        if cat.unseen:
            pos = _anomalies(rng, n)
            idx[pos] = len(cat.values) + rng.integers(0, len(cat.unseen), len(pos))
        mask = rng.random(n) < cat.null_frac if cat.null_frac else None
        dictionary = pa.array(list(cat.values) + list(cat.unseen), pa.string())
        arrays[cat.name] = pa.DictionaryArray.from_arrays(pa.array(idx, mask=mask),
                                                          dictionary).dictionary_decode()
    return pa.table(arrays)


def ensure_data(rows: int, seed: int, rows_per_file: int, row_group: int) -> tuple[Path, float | None]:
    """The data directory for (rows, seed, layout), generated if absent. Returns (path, gen seconds)."""
    import pyarrow.parquet as pq

    name = f"validation_v{GEN_VERSION}_rows{rows}_seed{seed}_file{rows_per_file}_rg{row_group}"
    path = DATA_DIR / name
    manifest = DATA_DIR / f"{name}.json"
    if manifest.exists() and path.is_dir():
        return path, None
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    began = time.perf_counter()
    parts = math.ceil(rows / rows_per_file)
    for part in range(parts):
        first = part * rows_per_file
        n = min(rows_per_file, rows - first)
        pq.write_table(make_table(n, seed, part, first), path / f"part-{part:05d}.parquet",
                       row_group_size=row_group, compression="snappy")
    seconds = time.perf_counter() - began
    manifest.write_text(json.dumps({"rows": rows, "seed": seed, "files": parts, "row_group": row_group,
                                    "columns": COLUMN_NAMES, "generated_s": round(seconds, 1)}, indent=2))
    return path, seconds


def bench_schema() -> Any:
    """The mlplatform SchemaSpec every variant checks against."""
    from mlplatform.spec import ColumnSchema, SchemaSpec

    columns = [ColumnSchema(name=ID_COLUMN, type="string", regex=ID_REGEX)]
    columns += [ColumnSchema(name=c.name, type=c.kind, min=c.lo, max=c.hi, max_null_fraction=c.max_null)
                for c in NUMERIC]
    columns += [ColumnSchema(name=c.name, type="category", domain=list(c.values),
                             max_null_fraction=c.max_null) for c in CATEGORICAL]
    return SchemaSpec(columns=columns, strict=True)


# --- drift (shared by single) ----------------------------------------------------------------


def psi(expected: list[int], actual: list[int]) -> float:
    p = np.asarray(expected, dtype=np.float64)
    q = np.asarray(actual, dtype=np.float64)
    p = np.maximum(p / max(p.sum(), 1), PSI_EPS)
    q = np.maximum(q / max(q.sum(), 1), PSI_EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(expected: dict[str, int], actual: dict[str, int], other_expected: int,
                other_actual: int) -> float:
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(expected) | set(actual))
    p = np.array([expected.get(k, 0) for k in keys] + [other_expected], dtype=np.float64)
    q = np.array([actual.get(k, 0) for k in keys] + [other_actual], dtype=np.float64)
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(jensenshannon(p, q, base=2))


# --- variant: single -----------------------------------------------------------------------

_LOCAL = threading.local()


def _scratch(n: int) -> np.ndarray:
    """A float64 buffer of `n` values, one per thread, reused across batches."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or len(buf) < n:
        buf = _LOCAL.buf = np.empty(max(n, 1 << 19), dtype=np.float64)
    return buf[:n]



@dataclass
class NumState:
    lo: float | None
    hi: float | None
    edge_lo: float
    edge_hi: float
    n: int = 0
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf


class SingleValidator:
    """Streams record batches through vectorised checks + mergeable statistics."""

    def __init__(self, schema: Any, reference: dict[str, Any] | None = None, threads: int = 2,
                 batch_rows: int = 250_000, readahead: int = 2, scan_threads: bool = False):
        self.schema = schema
        self.reference = reference
        self.threads = threads
        self.batch_rows = batch_rows
        self.readahead = readahead
        self.scan_threads = scan_threads
        self.cols = {c.name: c for c in schema.columns}

    # one batch -> a partial result (runs in worker threads: pyarrow and numpy release the GIL)
    def _partial(self, batch: Any, offset: int, stride: int, numeric: dict[str, NumState],
                 cats: dict[str, set[str] | None], regex: dict[str, str]) -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.compute as pc

        out: dict[str, Any] = {"num": {}, "cat": {}, "str": {}, "fail": {}}
        bad: np.ndarray | None = None

        def failed(key: tuple[str, str], mask: np.ndarray, values: Any) -> None:
            nonlocal bad
            count = int(mask.sum())
            if count:
                out["fail"][key] = (count, values.filter(pa.array(mask)).slice(0, 5).to_pylist())
                bad = mask if bad is None else (bad | mask)

        for name, st in numeric.items():
            arr = batch.column(name)
            nulls = arr.null_count
            vals = arr.drop_null() if nulls else arr
            x = vals.to_numpy()
            part: dict[str, Any] = {"nulls": nulls, "n": len(x)}
            if len(x):
                mn, mx = x.min(), x.max()
                mean = float(x.mean(dtype=np.float64))
                buf = _scratch(len(x))  # reused float64 buffer: fresh 4 MB arrays cost page faults
                np.subtract(x, mean, out=buf)
                part.update(min=float(mn), max=float(mx), mean=mean, m2=float(np.einsum("i,i->", buf, buf)))
                if (st.lo is not None and mn < st.lo) or (st.hi is not None and mx > st.hi):
                    cond = None
                    if st.lo is not None:
                        cond = pc.less(arr, st.lo)
                    if st.hi is not None:
                        above = pc.greater(arr, st.hi)
                        cond = above if cond is None else pc.or_(cond, above)
                    mask = cond.fill_null(False).to_numpy(zero_copy_only=False)
                    failed((name, "range"), mask, arr)
                # 20 equal-width bins: bin = floor((x - lo) * scale), values outside clipped to the ends
                scale = N_BINS / ((st.edge_hi - st.edge_lo) or 1.0)
                np.multiply(x, scale, out=buf)
                np.subtract(buf, st.edge_lo * scale, out=buf)
                if mn < st.edge_lo or mx > st.edge_hi:
                    np.maximum(buf, 0, out=buf)
                    np.minimum(buf, N_BINS, out=buf)
                hist = np.bincount(buf.astype(np.intp), minlength=N_BINS + 1)
                hist[N_BINS - 1] += hist[N_BINS]  # x == hi belongs to the last bin
                part["hist"] = hist[:N_BINS]
                part["sample"] = x[(-offset) % stride::stride].astype(np.float64)
            out["num"][name] = part

        for name, domain in cats.items():
            arr = batch.column(name)
            if not pa.types.is_dictionary(arr.type):
                arr = pc.dictionary_encode(arr)
            values = arr.dictionary.to_pylist()
            k = len(values)
            idx = pc.fill_null(arr.indices, k).to_numpy()
            counts = np.bincount(idx, minlength=k + 1)
            out["cat"][name] = ({v: int(c) for v, c in zip(values, counts[:k], strict=True) if c},
                                int(counts[k]))
            unseen = [i for i, v in enumerate(values) if counts[i] and domain is not None and v not in domain]
            if unseen:
                lookup = np.zeros(k + 1, dtype=bool)
                lookup[unseen] = True
                mask = lookup[idx]
                count = int(mask.sum())
                out["fail"][(name, "domain")] = (count, [values[i] for i in unseen][:5])
                bad = mask if bad is None else (bad | mask)

        for name, pattern in regex.items():
            arr = batch.column(name)
            out["str"][name] = arr.null_count
            no_match = pc.invert(pc.match_substring_regex(arr, pattern))
            if pc.sum(no_match).as_py():
                failed((name, "regex"), no_match.fill_null(False).to_numpy(zero_copy_only=False), arr)
        for name in self.cols:
            if name not in numeric and name not in cats and name not in regex:
                out["str"][name] = batch.column(name).null_count
        out["rows"] = batch.num_rows
        out["bad"] = 0 if bad is None else int(bad.sum())
        return out

    def run(self, path: Path) -> dict[str, Any]:
        import pyarrow.dataset as pads

        from mlplatform.data.schema import is_numeric, type_matches

        fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(
            dictionary_columns=[c.name for c in self.schema.columns if c.type == "category"]))
        dataset = pads.dataset(str(path), format=fmt)
        failures: list[dict[str, Any]] = []
        present = set(dataset.schema.names)
        for col in self.schema.columns:
            if col.name not in present:
                if col.required:
                    failures.append({"column": col.name, "check": "required", "level": "dataset"})
            elif not type_matches(col.type, dataset.schema.field(col.name).type):
                failures.append({"column": col.name, "check": "type", "level": "dataset",
                                 "detail": str(dataset.schema.field(col.name).type)})
        if self.schema.strict:
            for extra in sorted(present - set(self.cols)):
                failures.append({"column": extra, "check": "strict", "level": "dataset"})
        type_failed = {f["column"] for f in failures if f["check"] == "type"}
        usable = [c for c in self.schema.columns if c.name in present and c.name not in type_failed]

        ref = self.reference or {}
        numeric: dict[str, NumState] = {}
        for col in usable:
            if not is_numeric(col):
                continue
            edges = ref.get("numeric", {}).get(col.name, {}).get("histogram", {}).get("edges")
            if edges:
                lo, hi = edges[0], edges[-1]
            elif col.min is not None and col.max is not None:
                lo, hi = col.min, col.max
            else:
                lo, hi = _footer_min_max(dataset, col.name)
            numeric[col.name] = NumState(col.min, col.max, lo, hi)
        cats = {c.name: set(c.domain) if c.domain is not None else None for c in usable
                if c.type in ("category", "bool")}
        regex = {c.name: c.regex for c in usable if c.regex and c.name not in numeric and c.name not in cats}

        total = dataset.count_rows()
        stride = max(1, total // QUANTILE_SAMPLE)
        scanner = dataset.scanner(columns=[c.name for c in usable], batch_size=self.batch_rows,
                                  batch_readahead=self.readahead, fragment_readahead=1,
                                  use_threads=self.scan_threads)

        rows = bad_rows = 0
        num_parts: dict[str, list[dict[str, Any]]] = {n: [] for n in numeric}
        cat_counts: dict[str, dict[str, int]] = {n: {} for n in cats}
        nulls: dict[str, int] = dict.fromkeys(self.cols, 0)
        fails: dict[tuple[str, str], list[Any]] = {}

        def merge(part: dict[str, Any]) -> None:
            nonlocal rows, bad_rows
            rows += part["rows"]
            bad_rows += part["bad"]
            for name, p in part["num"].items():
                nulls[name] += p["nulls"]
                num_parts[name].append(p)
            for name, (counts, n_null) in part["cat"].items():
                nulls[name] += n_null
                acc = cat_counts[name]
                for v, c in counts.items():
                    acc[v] = acc.get(v, 0) + c
            for name, n_null in part["str"].items():
                nulls[name] += n_null
            for key, (count, samples) in part["fail"].items():
                entry = fails.setdefault(key, [0, []])
                entry[0] += count
                for s in samples:
                    if len(entry[1]) < 5 and s not in entry[1]:
                        entry[1].append(s)

        offset = 0
        pending: deque[Future[dict[str, Any]]] = deque()
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for batch in scanner.to_batches():
                pending.append(pool.submit(self._partial, batch, offset, stride, numeric, cats, regex))
                offset += batch.num_rows
                while len(pending) > self.threads:
                    merge(pending.popleft().result())
            while pending:
                merge(pending.popleft().result())

        # dataset-level checks and the row-level failures
        for col in usable:
            if rows and nulls.get(col.name, 0) / rows > col.max_null_fraction:
                failures.append({"column": col.name, "check": "max_null_fraction", "level": "dataset",
                                 "null_fraction": nulls[col.name] / rows, "limit": col.max_null_fraction})
        for (name, check), (count, samples) in sorted(fails.items()):
            failures.append({"column": name, "check": check, "level": "row", "failed": count,
                             "samples": samples})

        stats: dict[str, Any] = {"rows": rows, "numeric": {}, "categorical": {}, "other": {}}
        for name, st in numeric.items():
            stats["numeric"][name] = _numeric_stats(st, num_parts[name], nulls[name])
        for name, counts in cat_counts.items():
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_K]
            count = sum(counts.values())
            stats["categorical"][name] = {"count": count, "nulls": nulls[name], "distinct": len(counts),
                                          "top": top, "other": count - sum(c for _, c in top)}
        for col in usable:
            if col.name not in numeric and col.name not in cats:
                stats["other"][col.name] = {"count": rows - nulls[col.name], "nulls": nulls[col.name]}

        drift = _drift(self.reference, stats) if self.reference else None
        return {"rows_in": rows, "rows_valid": rows - bad_rows, "rows_quarantined": bad_rows,
                "failures": failures, "stats": stats, "drift": drift}


def _footer_min_max(dataset: Any, name: str) -> tuple[float, float]:
    """Column min/max from the Parquet footers' row-group statistics (no data read)."""
    lo, hi = math.inf, -math.inf
    for fragment in dataset.get_fragments():
        meta = fragment.metadata
        idx = meta.schema.to_arrow_schema().get_field_index(name)
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(idx).statistics
            if st is not None and st.has_min_max:
                lo, hi = min(lo, st.min), max(hi, st.max)
    return (lo, hi) if lo <= hi else (0.0, 1.0)


def _numeric_stats(st: NumState, parts: list[dict[str, Any]], nulls: int) -> dict[str, Any]:
    n, mean, m2 = 0, 0.0, 0.0
    lo, hi = math.inf, -math.inf
    hist = np.zeros(N_BINS, dtype=np.int64)
    samples = []
    for p in parts:
        if not p["n"]:
            continue
        # Chan et al.: merge (count, mean, M2) of two partitions
        nb = p["n"]
        delta = p["mean"] - mean
        total = n + nb
        mean += delta * nb / total
        m2 += p["m2"] + delta * delta * n * nb / total
        n = total
        lo, hi = min(lo, p["min"]), max(hi, p["max"])
        hist += p["hist"]
        samples.append(p["sample"])
    sample = np.concatenate(samples) if samples else np.empty(0)
    quantiles = np.quantile(sample, QUANTILES).tolist() if len(sample) else [None] * len(QUANTILES)
    return {
        "count": n, "nulls": nulls,
        "mean": mean if n else None, "std": math.sqrt(m2 / n) if n else None,
        "min": lo if n else None, "max": hi if n else None,
        "quantiles": {f"p{round(q * 100):02d}": v for q, v in zip(QUANTILES, quantiles, strict=True)},
        "quantile_sample": int(len(sample)),
        "histogram": {"edges": np.linspace(st.edge_lo, st.edge_hi, N_BINS + 1).tolist(),
                      "counts": hist.tolist()},
    }


def _drift(reference: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"numeric_psi": {}, "categorical_js": {}}
    for name, cur in stats["numeric"].items():
        ref = reference["numeric"].get(name)
        if ref:
            out["numeric_psi"][name] = round(psi(ref["histogram"]["counts"], cur["histogram"]["counts"]), 6)
    for name, cur in stats["categorical"].items():
        ref = reference["categorical"].get(name)
        if ref:
            out["categorical_js"][name] = round(js_distance(dict(ref["top"]), dict(cur["top"]),
                                                            ref["other"], cur["other"]), 6)
    return out


def _norm_check(check: str) -> str:
    if check.startswith(("min", "max ", "in_range", "range")) and check != "max_null_fraction":
        return "range"
    return check


def _row_counts(failures: list[dict[str, Any]]) -> dict[str, int]:
    """{"column:check": failing rows} of the row-level failures, min and max merged into range."""
    out: dict[str, int] = {}
    for f in failures:
        if isinstance(f, dict) and f.get("level") == "row":
            key = f"{f.get('column')}:{_norm_check(str(f.get('check')))}"
            out[key] = out.get(key, 0) + int(f.get("failed", f.get("failing", 0)) or 0)
    return out


def _dataset_columns(failures: list[dict[str, Any]]) -> set[str]:
    return {str(f.get("column")) for f in failures if isinstance(f, dict) and f.get("level") != "row"}


def _check_counts(failures: list[dict[str, Any]]) -> dict[str, Any]:
    """{"column:check": rows failed (row level) or "fail" (dataset level)} for cross-checks."""
    out: dict[str, Any] = {}
    for f in failures:
        out[f"{f['column']}:{f['check']}"] = f.get("failed", "fail")
    return dict(sorted(out.items()))


def worker_single(args: argparse.Namespace) -> dict[str, Any]:
    schema = bench_schema()
    h.emit_phase("warmup_start")
    began = time.perf_counter()
    options = {"threads": args.threads, "batch_rows": args.batch_rows}
    reference = SingleValidator(schema, **options).run(args.ref)["stats"]
    warmup_s = time.perf_counter() - began
    h.emit_phase("warmup_end")
    seconds: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(args.repeat):
        h.emit_phase("timed_start")
        began = time.perf_counter()
        result = SingleValidator(schema, reference, **options).run(args.data)
        seconds.append(time.perf_counter() - began)
        h.emit_phase("timed_end")
    return {"status": "ok", "seconds": seconds, "warmup_s": warmup_s, "rows_in": result["rows_in"],
            "rows_valid": result["rows_valid"], "rows_quarantined": result["rows_quarantined"],
            "checks": _check_counts(result["failures"]), "failures": result["failures"],
            "drift": result["drift"], "stats": result["stats"], "threads": args.threads,
            "batch_rows": args.batch_rows}


# --- variant: pandera ------------------------------------------------------------------------


def pandera_schema(schema: Any) -> Any:
    import pandera.pandas as pa

    dtypes = {"int": "int64", "float": "float64", "string": str, "category": str, "bool": bool}
    columns = {}
    for col in schema.columns:
        checks = [pa.Check(lambda s, f=col.max_null_fraction: bool(s.isna().mean() <= f), ignore_na=False,
                           name="max_null_fraction")]
        if col.min is not None and col.max is not None:
            checks.append(pa.Check.in_range(col.min, col.max))
        elif col.min is not None:
            checks.append(pa.Check.ge(col.min))
        elif col.max is not None:
            checks.append(pa.Check.le(col.max))
        if col.domain is not None:
            checks.append(pa.Check.isin(col.domain))
        if col.regex:
            checks.append(pa.Check.str_matches(col.regex))
        columns[col.name] = pa.Column(dtypes[col.type], checks=checks, nullable=True, required=col.required)
    return pa.DataFrameSchema(columns, strict=schema.strict)


PANDERA_CHECK = (
    ("in_range", "range"), ("greater_than_or_equal_to", "range"), ("less_than_or_equal_to", "range"),
    ("isin", "domain"), ("str_matches", "regex"), ("max_null_fraction", "max_null_fraction"),
    ("dtype", "type"), ("column_in_dataframe", "required"), ("column_in_schema", "strict"),
)


def _pandera_failures(cases: Any) -> tuple[list[dict[str, Any]], int]:
    failures: list[dict[str, Any]] = []
    if cases is None or len(cases) == 0:
        return failures, 0
    rows = cases[cases["index"].notna()]
    quarantined = int(rows["index"].nunique())
    for (column, check), group in cases.groupby(["column", "check"], sort=True, dropna=False):
        name = next((ours for theirs, ours in PANDERA_CHECK if str(check).startswith(theirs)), str(check))
        if group["index"].notna().any():
            failures.append({"column": column, "check": name, "level": "row", "failed": len(group),
                             "samples": group["failure_case"].drop_duplicates().head(5).tolist()})
        else:
            failures.append({"column": column, "check": name, "level": "dataset"})
    return failures, quarantined


def _pandera_once(path: Path, schema: Any) -> tuple[float, float, int, list[dict[str, Any]], int]:
    import pandas as pd
    import pandera.pandas as pa

    began = time.perf_counter()
    df = pd.read_parquet(path)
    read_s = time.perf_counter() - began
    cases = None
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    failures, quarantined = _pandera_failures(cases)
    return read_s, time.perf_counter() - began - read_s, len(df), failures, quarantined


def worker_pandera(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import pandera

    schema = pandera_schema(bench_schema())
    h.emit_phase("warmup_start")
    began = time.perf_counter()
    _pandera_once(args.ref, schema)
    warmup_s = time.perf_counter() - began
    h.emit_phase("warmup_end")
    runs = []
    for _ in range(args.repeat):
        h.emit_phase("timed_start")
        runs.append(_pandera_once(args.data, schema))
        h.emit_phase("timed_end")
    best = min(runs, key=lambda r: r[0] + r[1])
    read_s, validate_s, rows, failures, quarantined = best
    return {"status": "ok", "seconds": [r[0] + r[1] for r in runs], "warmup_s": warmup_s,
            "read_s": read_s, "validate_s": validate_s, "rows_in": rows, "rows_valid": rows - quarantined,
            "rows_quarantined": quarantined, "checks": _check_counts(failures), "failures": failures,
            "pandas": pd.__version__, "pandera": pandera.__version__}


# --- variant: ray ----------------------------------------------------------------------------


def _jsonable(value: Any, depth: int = 0) -> Any:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        return [_jsonable(v, depth + 1) for v in list(value)[:200]]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)[:500]


def _ray_drift_kwargs(validate_dataset: Callable[..., Any]) -> dict[str, Any]:
    """drift_spec=, when validate_dataset takes one: it computes drift only when given a spec.

    PSI for the numeric columns and Jensen-Shannon for the categorical ones, as `single` does.
    """
    import inspect

    if "drift_spec" not in inspect.signature(validate_dataset).parameters:
        return {}
    from mlplatform.spec import DriftSpec, FeatureDrift

    features = {c.name: FeatureDrift(method="psi") for c in NUMERIC}
    features.update({c.name: FeatureDrift(method="jensenshannon") for c in CATEGORICAL})
    return {"drift_spec": DriftSpec(features=features)}


def worker_ray(args: argparse.Namespace, generic_reader: bool = False) -> dict[str, Any]:
    """`ray`: validate_parquet (one task per row group, what the pipeline runs on snapshots);
    `ray-dataset`: validate_dataset on ray.data.read_parquet (the path for any Ray Dataset)."""
    try:
        from mlplatform.data.validation import validate_dataset, validate_parquet
    except Exception as exc:  # the module is written in parallel and may not exist yet
        return {"status": "skipped", "reason": f"mlplatform.data.validation cannot be imported: {exc!r}"}
    import pyarrow.fs as pafs
    import ray

    def run(path: Path, **kwargs: Any) -> Any:
        if generic_reader:
            return validate_dataset(ray.data.read_parquet(str(path)), schema, **kwargs)
        files = sorted(str(p) for p in Path(path).glob("*.parquet")) if Path(path).is_dir() else [str(path)]
        return validate_parquet(files, pafs.LocalFileSystem(), schema, **kwargs)

    schema = bench_schema()
    extra = _ray_drift_kwargs(validate_dataset)
    ray.init(address="local", num_cpus=2, object_store_memory=args.object_store_mb * h.MB,
             include_dashboard=False, _temp_dir=args.ray_temp_dir)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        h.emit_phase("warmup_start")
        began = time.perf_counter()
        ref = run(args.ref, reference=None, valid_out=None, quarantine_out=None)
        reference_stats = ref.stats
        warmup_s = time.perf_counter() - began
        h.emit_phase("warmup_end")
        seconds: list[float] = []
        result = None
        for _ in range(args.repeat):
            h.emit_phase("timed_start")
            began = time.perf_counter()
            result = run(args.data, reference=reference_stats, valid_out=None, quarantine_out=None,
                         **extra)
            seconds.append(time.perf_counter() - began)
            h.emit_phase("timed_end")
        assert result is not None
        failures = list(result.failures or [])
        return {"status": "ok", "seconds": seconds, "warmup_s": warmup_s, "rows_in": result.rows_in,
                "rows_valid": result.rows_valid, "rows_quarantined": result.rows_quarantined,
                "drift_present": result.drift is not None, "n_failures": len(failures),
                "failures": _jsonable(failures[:50]), "drift": _jsonable(result.drift),
                "drift_spec": _jsonable(extra.get("drift_spec")), "ray": ray.__version__}
    finally:
        ray.shutdown()


WORKERS = {"single": worker_single, "pandera": worker_pandera, "ray": worker_ray,
           "ray-dataset": lambda args: worker_ray(args, generic_reader=True)}


def worker_main(args: argparse.Namespace) -> int:
    return h.run_worker(lambda: WORKERS[args.worker](args))


# --- the parent: data, subprocesses, report ---------------------------------------------------


def run_variant(variant: str, args: argparse.Namespace, data: Path, ref: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    for key in ("RAY_ADDRESS", "PLATFORM_RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(key, None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", variant, "--data", str(data),
           "--ref", str(ref), "--repeat", str(args.repeat), "--threads", str(args.threads),
           "--batch-rows", str(args.batch_rows),
           "--object-store-mb", str(args.object_store_mb)]
    m, res, record = h.run_variant(variant, cmd, env=env, ray=variant in ("ray", "ray-dataset"),
                                   interval=args.sample_interval,
                                   log_path=LOG_DIR / f"validation-{variant}.log")
    if record["status"] != "ok":
        record["notes"] = record.pop("reason")
        return record
    seconds = res.pop("seconds")
    best = min(seconds)
    windows = m.windows("timed_start", "timed_end")
    timed = m.peak(windows)
    record.update(
        rows=res["rows_in"], seconds=round(best, 3), seconds_all=[round(s, 3) for s in seconds],
        rows_per_s=round(res["rows_in"] / best), peak_mem_mb=timed.get("mem_mb"),
        memory={"timed_runs": timed, "whole_subprocess": m.peak(),
                "just_before_first_timed_run": m.before(windows[0][0]) if windows else {},
                "kernel_maxrss_mb_child_only": m.kernel_maxrss_mb,
                "sampler_cpu_s": m.sampler_cpu_s, "sample_interval_s": args.sample_interval},
        cpu_timed_runs=m.cpu(windows), warmup_s=round(res.pop("warmup_s"), 3), result=res,
    )
    return record


def _notes(variant: str, rec: dict[str, Any], args: argparse.Namespace, reference: dict[str, Any] | None,
           ref_rows: int) -> str:
    if rec["status"] != "ok":
        return f"{rec['status'].upper()}: {rec.get('notes', '')}"
    res = rec["result"]
    best = f"best of {args.repeat}; " if args.repeat > 1 else ""
    if variant == "single":
        note = (f"{best}checks+stats+drift; pyarrow scan + compute/numpy in {res['threads']} threads; "
                f"quantiles exact on a ~{QUANTILE_SAMPLE // 1000}k systematic sample")
    elif variant == "pandera":
        note = (f"{best}checks only (no stats/drift); read {res['read_s']:.1f}s + validate "
                f"{res['validate_s']:.1f}s")
    else:
        note = (f"{best}warm: after an untimed warm-up run on the {ref_rows:,}-row reference table "
                f"({rec['warmup_s']:.1f}s, gives the reference stats); "
                f"drift {'computed' if res.get('drift_present') else 'None'}")
    if reference is not None and variant != "single":
        diffs = []
        if res["rows_quarantined"] != reference["rows_quarantined"]:
            diffs.append(f"quarantined {res['rows_quarantined']} vs {reference['rows_quarantined']}")
        ours, theirs = _row_counts(reference["failures"]), _row_counts(res.get("failures") or [])
        if ours != theirs:
            diffs.append("row-level counts per check differ: " + ", ".join(
                f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k))[:300])
        ours_ds = _dataset_columns(reference["failures"])
        theirs_ds = _dataset_columns(res.get("failures") or [])
        if ours_ds != theirs_ds:
            diffs.append(f"dataset-level failures on {sorted(theirs_ds)} vs {sorted(ours_ds)}")
        res["agrees_with_single"] = not diffs
        note += ("; MISMATCH vs single: " + "; ".join(diffs)) if diffs else \
            "; quarantine and per-check counts agree with single"
    other = rec.get("cpu_timed_runs", {}).get("other_cores", 0.0)
    if other >= BUSY_CORES:
        note += f"; MACHINE BUSY: other processes used {other:.1f} cores during the timed run"
    return note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ",".join(VARIANTS))
    p.add_argument("--object-store-mb", type=int, default=1024, help="Ray object store (ray variant)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per variant; the best is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-rows", type=int, default=1_000_000, help="rows of the drift reference table")
    p.add_argument("--rows-per-file", type=int, default=1_000_000)
    p.add_argument("--row-group", type=int, default=500_000, help="Parquet row group rows")
    p.add_argument("--threads", type=int, default=2, help="compute threads of the single variant")
    p.add_argument("--batch-rows", type=int, default=250_000, help="record batch rows of the single variant")
    p.add_argument("--sample-interval", type=float, default=0.05, help="memory sampling period, seconds")
    p.add_argument("--out", type=Path, default=OUT_JSON)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ref", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--ray-temp-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    machine = h.machine_info()
    print(f"data: {args.rows:,} rows x {len(COLUMN_NAMES)} columns; reference {args.ref_rows:,} rows",
          flush=True)
    data, gen_s = ensure_data(args.rows, args.seed, args.rows_per_file, args.row_group)
    ref, ref_gen_s = ensure_data(args.ref_rows, args.seed + 1, args.rows_per_file, args.row_group)
    for label, path, secs in (("data", data, gen_s), ("reference", ref, ref_gen_s)):
        size = sum(f.stat().st_size for f in path.glob("*.parquet")) / h.MB
        print(f"  {label}: {path} ({size:,.0f} MB on disk, "
              f"{f'generated in {secs:.1f}s' if secs is not None else 'reused'})", flush=True)

    records: dict[str, dict[str, Any]] = {}
    for variant in variants:
        records[variant] = run_variant(variant, args, data, ref)
    ok_single = [records[v]["rows_per_s"] for v in SINGLE_PROCESS
                 if v in records and records[v]["status"] == "ok"]
    best_single = max(ok_single) if ok_single else None
    reference = records.get("single", {}).get("result") if records.get("single", {}).get("status") == "ok" \
        else None
    for variant, rec in records.items():
        rec["notes"] = _notes(variant, rec, args, reference, args.ref_rows)
        rps = rec.get("rows_per_s")
        rec["x_vs_best_single_process"] = round(rps / best_single, 3) if rps and best_single else None

    memory_method = (
        "peak_mem_mb: the highest value, over samples taken every "
        f"{args.sample_interval * 1000:.0f} ms by the parent during the timed runs only, of the variant's "
        "private anonymous memory (sum of RssAnon = resident - shared pages from /proc/PID/statm over its "
        "processes) plus the /dev/shm files its processes hold open (Ray's plasma object store), counted "
        "once each by allocated blocks. Processes: the variant's subprocess and all its descendants, plus "
        "(ray) every process whose command line names the Ray temp dir passed to ray.init(_temp_dir=...), "
        "with descendants. With ray.init() starting a local cluster, gcs_server / raylet / dashboard are "
        "children of the driver and the workers children of the raylet, so descendants already cover them "
        "(workers retitle themselves 'ray::IDLE', so their command lines do not name the temp dir). "
        "rss_sum_mb (shared pages counted once per process) and the kernel's peak RSS of the subprocess "
        "alone (wait4 ru_maxrss) are in the JSON too. psutil PSS/USS (smaps_rollup) were not used: 2-15 ms "
        "per process per sample, most of a core when sampling ~20 Ray processes every 50 ms."
    )
    payload = {
        "benchmark": "validation",
        "config": {"rows": args.rows, "columns": len(COLUMN_NAMES), "numeric": len(NUMERIC),
                   "categorical": len(CATEGORICAL), "string": 1, "ref_rows": args.ref_rows, "seed": args.seed,
                   "rows_per_file": args.rows_per_file, "row_group": args.row_group, "repeat": args.repeat,
                   "object_store_mb": args.object_store_mb, "threads_single": args.threads,
                   "batch_rows_single": args.batch_rows,
                   "data": str(data), "reference": str(ref), "variants": variants,
                   "quantiles": ("single: numpy linear-interpolated quantiles of a systematic 1-in-k "
                                 f"sample of ~{QUANTILE_SAMPLE:,} non-null values per column "
                                 "(rank error ~0.1-0.2%)"),
                   "histogram": f"{N_BINS} equal-width bins over the schema's [min, max], outliers clipped",
                   "drift": "PSI (eps 1e-4) per numeric column on the histograms; Jensen-Shannon distance "
                            "(base 2) per categorical column on top-20 + other"},
        "machine": machine,
        "packages": h.package_versions(["pyarrow", "pandas", "numpy", "pandera", "ray", "psutil"]),
        "memory_method": memory_method,
        "best_single_process_rows_per_s": best_single,
        "variants": records,
    }
    h.write_json(args.out, payload)

    rows = []
    for variant, rec in records.items():
        x = rec.get("x_vs_best_single_process")
        cores = rec.get("cpu_timed_runs", {}).get("variant_cores")
        rows.append([variant, h.fmt_int(rec.get("rows_per_s")), h.fmt_float(x) + ("x" if x else ""),
                     h.fmt_float(rec.get("seconds")), h.fmt_float(cores), h.fmt_int(rec.get("peak_mem_mb")),
                     rec["notes"]])
    h.print_table(
        f"Validation + statistics + drift: {args.rows:,} rows x {len(COLUMN_NAMES)} columns "
        f"({machine['cpu_count_logical']} CPUs, {machine['memory_total_mb'] / 1024:.0f} GiB)",
        [("variant", "left"), ("rows/s", "right"), ("x vs best single process", "right"),
         ("seconds", "right"), ("cores used", "right"), ("peak memory MB", "right"), ("notes", "left")],
        rows,
        caption="peak memory: private anonymous memory + /dev/shm (object store) of the variant's "
                "processes (subprocess + descendants; for ray also every process naming its temp dir), "
                "sampled every "
                f"{args.sample_interval * 1000:.0f} ms during the timed runs; cores used: the variant's CPU "
                f"seconds over the timed runs' wall time (sampled every 0.25 s: rough for runs under a "
                f"second). Details: {args.out}",
    )
    return 0 if all(r["status"] != "failed" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
