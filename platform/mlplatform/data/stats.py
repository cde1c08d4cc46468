"""Dataset statistics: exact moments and counts, sample-based quantiles.

Statistics are computed in the same pass as validation: each block returns a small
partial (count, mean, M2, min, max, histogram counts, category counts, a uniform
sample) and the driver merges them (Chan et al.'s parallel variance). Counts,
nulls, mean, std, min, max, category frequencies and histograms over fixed bins are
exact; quantiles and the numeric drift tests use the uniform sample (all values when
the batch is smaller than the sample size), which keeps the driver's memory bounded
by the sample size, not by the data size.

A batch's histogram uses its reference's bins, and where its values lie beyond them it
adds tail bins of the same width (doubled until at most MAX_TAIL_BINS cover the
farthest value), so a batch of larger items is drawn where its values are, not as a
spike in the reference's last bin. Drift is computed from the samples and category
counts, never from these histograms.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, PrivateAttr

from mlplatform import storage

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HIST_BINS = 20
TOP_K = 20
MAX_CATEGORIES = 1000  # a "category" with more distinct values than this is tracked as top values only
MAX_TAIL_BINS = 100  # bins beyond each end of the reference's edges, at most
MAX_GRID_BINS = 3 * HIST_BINS  # a reference with more bins (tails included) is re-binned for the next batch
MAX_SCRATCH_BYTES = 64 << 20  # a scratch buffer up to this size is kept for the thread's next block


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]
    exact: bool  # False when binned from the sample (no reference fixed the bins)
    underflow_bins: int = 0  # leading bins below the reference's first edge
    overflow_bins: int = 0  # trailing bins above the reference's last edge


class NumericStats(BaseModel):
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    quantiles: dict[str, float]
    histogram: Histogram | None


class CategoricalStats(BaseModel):
    distinct: int
    top: list[tuple[str, int]]
    counts: dict[str, int]


class ColumnStats(BaseModel):
    name: str
    type: str
    count: int
    nulls: int
    numeric: NumericStats | None = None
    categorical: CategoricalStats | None = None
    time_range: tuple[str, str] | None = None

    @property
    def null_fraction(self) -> float:
        total = self.count + self.nulls
        return self.nulls / total if total else 0.0


class DatasetStats(BaseModel):
    rows: int
    columns: dict[str, ColumnStats]
    sample_size: int
    _samples: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """Uniform samples of non-null numeric values, per column (not in the JSON)."""
        return self._samples

    def categorical_counts(self) -> dict[str, dict[str, int]]:
        return {n: c.categorical.counts for n, c in self.columns.items() if c.categorical}

    def hist_edges(self) -> dict[str, np.ndarray]:
        """The bins a batch compared with this one uses: these, tails included, so that
        consecutive histograms line up; re-binned evenly over the same span once tails
        have made them too many."""
        out = {}
        for name, c in self.columns.items():
            if c.numeric and c.numeric.histogram:
                edges = np.asarray(c.numeric.histogram.edges)
                if len(edges) - 1 > MAX_GRID_BINS:
                    edges = np.linspace(edges[0], edges[-1], HIST_BINS + 1)
                out[name] = edges
        return out

    def save(self, fs: pafs.FileSystem, folder: str) -> None:
        """Two files, each published atomically (storage.publish_file); the sample first, so
        that stats.json, what a reader opens first, always has its sample next to it."""
        names = [n for n, v in self._samples.items() for _ in range(len(v))]
        values = np.concatenate(list(self._samples.values())) if self._samples else np.array([])
        storage.put_table(fs, f"{folder}/sample.parquet",
                          pa.table({"column": pa.array(names, pa.string()),
                                    "value": pa.array(values, pa.float64())}))
        storage.put_bytes(fs, f"{folder}/stats.json", self.model_dump_json(indent=1).encode())

    @classmethod
    def load(cls, fs: pafs.FileSystem, folder: str) -> DatasetStats:
        with fs.open_input_stream(f"{folder}/stats.json") as src:
            stats = cls.model_validate(json.loads(src.read()))
        table = pq.read_table(f"{folder}/sample.parquet", filesystem=fs)
        col, val = table.column("column").to_numpy(zero_copy_only=False), table.column("value").to_numpy()
        for name in np.unique(col):
            stats._samples[str(name)] = val[col == name]
        return stats


# --- per-block partials and their merge -------------------------------------------------


@dataclass
class ColumnPartial:
    type: str
    count: int = 0
    nulls: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: Any = None
    max: Any = None
    hist: np.ndarray | None = None
    edges: np.ndarray | None = None
    under: Tail | None = None  # values below edges[0]
    over: Tail | None = None  # values above edges[-1]
    cats: Counter | None = None
    sample: list[np.ndarray] = field(default_factory=list)

    def merge(self, other: ColumnPartial) -> None:
        n = self.count + other.count
        if other.count and self.type in ("int", "float"):
            delta = other.mean - self.mean
            self.mean += delta * other.count / n
            self.m2 += other.m2 + delta * delta * self.count * other.count / n
        self.count = n
        self.nulls += other.nulls
        if other.min is not None:
            self.min = other.min if self.min is None else min(self.min, other.min)
            self.max = other.max if self.max is None else max(self.max, other.max)
        if other.hist is not None:
            self.hist = other.hist.copy() if self.hist is None else self.hist + other.hist
            self.edges = other.edges
        self.under = Tail.merged(self.under, other.under)
        self.over = Tail.merged(self.over, other.over)
        if other.cats is not None:
            self.cats = Counter(other.cats) if self.cats is None else self.cats + other.cats
        self.sample.extend(other.sample)


@dataclass
class Tail:
    """Counts of values beyond one end of fixed edges, by distance from that end.

    Bin i holds distances in [i, i + 1) * width * 2**level. A block doubles the width
    until its farthest value is within MAX_TAIL_BINS bins, and a merge coarsens to the
    larger level, so a partial stays small whatever the values are."""

    width: float
    level: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, distance: np.ndarray, width: float) -> Tail | None:
        if not distance.size:
            return None
        idx = np.minimum(distance / width, 2.0**62).astype(np.int64)  # inf stays a finite bin
        level = 0
        while int(idx.max()) >> level >= MAX_TAIL_BINS:
            level += 1
        return cls(width, level, np.bincount(idx >> level))

    def at(self, level: int) -> np.ndarray:
        """Counts coarsened to `level` (>= this tail's)."""
        if level == self.level:
            return self.counts
        groups = np.arange(len(self.counts)) >> (level - self.level)
        return np.bincount(groups, weights=self.counts).astype(np.int64)

    @staticmethod
    def merged(a: Tail | None, b: Tail | None) -> Tail | None:
        if a is None or b is None:
            return a if b is None else Tail(b.width, b.level, b.counts.copy())
        level = max(a.level, b.level)
        x, y = a.at(level), b.at(level)
        counts = np.zeros(max(len(x), len(y)), np.int64)
        counts[: len(x)] += x
        counts[: len(y)] += y
        return Tail(a.width, level, counts)

    def distances(self) -> np.ndarray:
        """The bin edges, as distances from the end they extend (len(counts) + 1 of them)."""
        return np.arange(len(self.counts) + 1) * self.width * 2.0**self.level


def _outer_widths(edges: np.ndarray) -> tuple[float, float]:
    """Widths for tail bins: those of the first and last bin (edges stay evenly spaced)."""
    fallback = float(edges[-1] - edges[0]) or 1.0
    first, last = float(edges[1] - edges[0]), float(edges[-1] - edges[-2])
    return (first if first > 0 else fallback), (last if last > 0 else fallback)


def extend_edges(edges: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, int, int]:
    """`edges` with tail bins, as a batch's histogram adds them, out to cover [lo, hi]; also
    how many bins were added below and above (to draw two histograms on one grid)."""
    low_width, high_width = _outer_widths(edges)
    below = Tail.of(np.array([edges[0] - lo]), low_width) if lo < edges[0] else None
    above = Tail.of(np.array([hi - edges[-1]]), high_width) if hi > edges[-1] else None
    if below is not None:
        edges = np.concatenate([edges[0] - below.distances()[:0:-1], edges])
    if above is not None:
        edges = np.concatenate([edges, edges[-1] + above.distances()[1:]])
    return edges, len(below.counts) if below else 0, len(above.counts) if above else 0


_SCRATCH = threading.local()


def scratch(name: str, n: int, dtype: Any) -> np.ndarray:
    """A buffer of `n` values for temporaries of the per-block work, reused across blocks.

    Why: a block's temporaries are megabytes each (4 MB per 500k float64 values); numpy takes
    them from malloc, which hands freed memory back to the OS and faults it in again for the
    next one. Zeroing those fresh pages was most of the per-column statistics (8 ms instead
    of 2 ms per 500k values in issue 15's profile). One buffer per name and thread, sized by
    the largest block seen (up to MAX_SCRATCH_BYTES), so memory stays set by the block size.
    The contents are only valid until the next call with the same name in the same thread:
    nothing that outlives a block (a partial, a mask kept for the quarantine) may be one.
    """
    dt = np.dtype(dtype)
    bufs: dict[str, np.ndarray] = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.dtype != dt or buf.size < n:
        buf = np.empty(max(n, 1), dt)
        if buf.nbytes <= MAX_SCRATCH_BYTES:
            bufs[name] = buf
    return buf[:n]


def bin_index(values: np.ndarray, edges: np.ndarray, *, reuse: bool = False) -> np.ndarray:
    """Bin of each value for fixed edges; values outside land in the first / last bin.

    Equal-width edges (the usual case: they come from np.linspace) are binned with
    arithmetic, several times faster than a search; a value within rounding error of
    an inner edge may land in the neighbouring bin, which a histogram can afford.
    With `reuse` the result is a scratch buffer (see `scratch`), valid until the next call.
    """
    last = len(edges) - 2
    lo, hi = float(edges[0]), float(edges[-1])
    width = (hi - lo) / (last + 1) if hi > lo else 0.0
    if width <= 0 or not np.allclose(np.diff(edges), width, rtol=1e-9, atol=0):
        return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, last)
    n = values.size
    scaled = scratch("stats.tmp", n, np.float64) if reuse else np.empty(n)
    np.subtract(values, lo, out=scaled)
    scaled *= 1.0 / width
    np.clip(scaled, 0, last, out=scaled)
    idx = scratch("stats.bin", n, np.intp) if reuse else np.empty(n, np.intp)
    np.copyto(idx, scaled, casting="unsafe")  # truncation: the bin, as astype(np.intp) gives
    return idx


def numeric_partial(values: np.ndarray, type_: str, nulls: int, edges: np.ndarray | None,
                    sample_mask: np.ndarray | None, *, sample: np.ndarray | None = None) -> ColumnPartial:
    """Moments, extremes, fixed-bin counts and a sample of one block's non-null values.

    The sample is `sample` when given (the caller picked it), else the values `sample_mask`
    selects, else a copy of all of them (`values` may be a scratch buffer)."""
    part = ColumnPartial(type=type_, count=int(values.size), nulls=nulls)
    if values.size:
        part.mean = float(values.mean())
        centered = scratch("stats.tmp", values.size, np.float64)
        np.subtract(values, part.mean, out=centered)
        part.m2 = float(np.einsum("i,i->", centered, centered))  # a dot product, without a temp
        part.min, part.max = float(values.min()), float(values.max())
        if edges is not None:
            _bin(part, values, edges)
        if sample is None:
            sample = np.array(values) if sample_mask is None else values[sample_mask]
        part.sample = [sample]
    return part


def _bin(part: ColumnPartial, values: np.ndarray, edges: np.ndarray) -> None:
    """Fixed-bin counts of one block: inside the edges, and in tails beyond them.

    All values are binned at once (those outside land in the end bins) and the few outside
    are then taken back out of the end bins: no copy of the values inside."""
    part.edges = edges
    lo, hi = float(edges[0]), float(edges[-1])
    part.hist = np.bincount(bin_index(values, edges, reuse=True), minlength=len(edges) - 1)
    if part.min < lo or part.max > hi:
        low_width, high_width = _outer_widths(edges)
        if part.min < lo:
            below = values[values < lo]
            part.hist[0] -= below.size
            part.under = Tail.of(lo - below, low_width)
        if part.max > hi:
            above = values[values > hi]
            part.hist[-1] -= above.size
            part.over = Tail.of(above - hi, high_width)


def _fixed_histogram(p: ColumnPartial) -> Histogram:
    """The merged fixed-bin counts, tails outside the reference's edges included."""
    edges, counts = np.asarray(p.edges, dtype=float), np.asarray(p.hist, dtype=np.int64)
    under = over = 0
    if p.under is not None:
        under = len(p.under.counts)
        edges = np.concatenate([edges[0] - p.under.distances()[:0:-1], edges])
        counts = np.concatenate([p.under.counts[::-1], counts])
    if p.over is not None:
        over = len(p.over.counts)
        edges = np.concatenate([edges, edges[-1] + p.over.distances()[1:]])
        counts = np.concatenate([counts, p.over.counts])
    return Histogram(edges=list(map(float, edges)), counts=[int(c) for c in counts], exact=True,
                     underflow_bins=under, overflow_bins=over)


def _quantiles(sample: np.ndarray) -> dict[str, float]:
    """All quantiles in one call: one partition of the sample, not one per quantile."""
    if not sample.size:
        return {}
    values = np.quantile(sample, QUANTILES)
    return {f"p{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, values, strict=True)}


def finalize(partials: dict[str, ColumnPartial], rows: int, sample_size: int) -> DatasetStats:
    columns: dict[str, ColumnStats] = {}
    samples: dict[str, np.ndarray] = {}
    for name, p in partials.items():
        cs = ColumnStats(name=name, type=p.type, count=p.count, nulls=p.nulls)
        if p.type in ("int", "float"):
            sample = np.concatenate(p.sample) if p.sample else np.array([], dtype=float)
            samples[name] = sample
            hist = None
            if p.hist is not None and p.edges is not None:
                hist = _fixed_histogram(p)
            elif sample.size and p.min is not None:
                edges = np.linspace(p.min, p.max if p.max > p.min else p.min + 1, HIST_BINS + 1)
                counts, _ = np.histogram(sample, bins=edges)
                scale = p.count / max(sample.size, 1)
                hist = Histogram(edges=list(map(float, edges)),
                                 counts=[int(round(c * scale)) for c in counts], exact=False)
            cs.numeric = NumericStats(
                mean=p.mean if p.count else None,
                std=float(np.sqrt(p.m2 / (p.count - 1))) if p.count > 1 else None,
                min=p.min, max=p.max,
                quantiles=_quantiles(sample),
                histogram=hist)
        elif p.cats is not None:
            cs.categorical = CategoricalStats(
                distinct=len(p.cats), top=[(str(k), int(v)) for k, v in p.cats.most_common(TOP_K)],
                counts={str(k): int(v) for k, v in p.cats.most_common(MAX_CATEGORIES)})
        elif p.type == "timestamp" and p.min is not None:
            cs.time_range = (str(p.min), str(p.max))
        columns[name] = cs
    stats = DatasetStats(rows=rows, columns=columns, sample_size=sample_size)
    stats._samples = samples
    return stats
