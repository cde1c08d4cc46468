"""Feature computation: a view's row-wise transformation, then its per-entity windowed
aggregations, on pandas batches (so the same functions run in Ray Data tasks for a
batch and in-process for a single row at serving time).

Window semantics: the aggregate at an event (entity e, time t) covers the events of e
with t - window < ts <= t, the event itself included (it is known at t). Events of
one entity at the same timestamp all get the aggregate over all of them: the state
"at time t" cannot depend on the order rows arrived in. pandas' rolling windows do
the work (bounds per entity, _EntityWindows); ties and `last` (the last non-null value
within the window, which rolling does not offer) are handled around it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from mlplatform.errors import InputError
from mlplatform.features.definitions import FeatureView, load_transformation
from mlplatform.spec import duration_seconds

HISTORY_FLAG = "_mlp_history"


def to_utc_naive(values: pd.Series, column: str) -> pd.Series:
    """Timestamps as naive UTC microseconds, the one representation the stores keep."""
    if not pd.api.types.is_datetime64_any_dtype(values):
        try:
            values = pd.to_datetime(values, utc=True)
        except (ValueError, TypeError) as exc:
            raise InputError(f"column {column!r} must hold timestamps: {exc}") from None
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.astype("datetime64[us]")


def transform(view: FeatureView, df: pd.DataFrame) -> pd.DataFrame:
    """Apply the view's row-wise transformation; keys are carried over if it drops them."""
    if view.transformation is None:
        return df
    fn = load_transformation(view.transformation, view.name)
    try:
        out = fn(df.copy())
    except Exception as exc:  # the user's code: name it, keep its message, no traceback
        raise InputError(f"feature view {view.name!r}: transformation {view.transformation!r} raised "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, pd.DataFrame):
        raise InputError(f"feature view {view.name!r}: transformation {view.transformation!r} returned "
                         f"{type(out).__name__}, not a pandas DataFrame")
    if len(out) != len(df):
        raise InputError(f"feature view {view.name!r}: transformation {view.transformation!r} returned "
                         f"{len(out)} rows for {len(df)}: it must be row-wise (one row out per row in)")
    out = out.reset_index(drop=True)
    for col in [*view.key_columns, HISTORY_FLAG]:
        if col in df.columns and col not in out.columns:
            out[col] = df[col].to_numpy()
    return out


def check_columns(view: FeatureView, columns: list[str], where: str) -> None:
    """Every key, feature and aggregated column must exist: an error naming the missing ones."""
    spec = view.view_spec()
    needed = {c: "key column" for c in view.key_columns}
    needed.update({c: "feature" for c in spec.features})
    needed.update({a.column: "aggregation column" for a in spec.aggregations})
    missing = [f"{c} ({role})" for c, role in needed.items() if c not in columns]
    if missing:
        raise InputError(f"feature view {view.name!r}: missing column(s) {', '.join(missing)} in {where}; "
                         f"available: {sorted(columns)}")


class _EntityWindows(BaseIndexer):
    """The windows (t - w, t] of each row among its own entity's rows, in a frame sorted by
    (entity, time), for one plain rolling pass over the whole frame.

    pandas' `groupby(entity).rolling(w, on=time)` gives the same windows to the same Cython
    kernels, but checks each group's order in a Python loop per entity and per function: 0.84 s
    of a 1.4 s featurize on 4,000 rows of 2,800 entities (issue 15). Each window's start is
    found for all rows at once: sorting the queries (entity, t - w) among the rows (entity,
    time) counts the rows at or before each query, that is the first row inside the window.
    """

    def __init__(self, codes: np.ndarray, stamps: np.ndarray, seconds: int) -> None:
        n = len(codes)
        query = stamps - np.int64(seconds) * 1_000_000_000
        order = np.lexsort((np.r_[np.zeros(n, np.int8), np.ones(n, np.int8)],  # rows before
                            np.r_[stamps, query], np.r_[codes, codes]))          # equal queries
        is_query = order >= n
        rows_before = np.cumsum(~is_query)[is_query]  # in sorted order, at each query
        starts = np.empty(n, dtype=np.int64)
        starts[order[is_query] - n] = rows_before
        super().__init__(window_size=0, starts=starts)

    def get_window_bounds(self, num_values: int = 0, min_periods: int | None = None,
                          center: bool | None = None, closed: str | None = None,
                          step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.starts, np.arange(1, num_values + 1, dtype=np.int64)


def aggregate(view: FeatureView, df: pd.DataFrame) -> pd.DataFrame:
    """Add the view's windowed aggregations to `df` (one or more entities' rows)."""
    spec = view.view_spec()
    if not spec.aggregations or df.empty:
        for agg in spec.aggregations:
            for name in agg.output_names():
                df[name] = pd.Series(dtype="float64")
        return df
    ent, ts = view.entity, view.timestamp_column
    # Rows without a key or a time belong to no entity's history (and groupby drops them).
    df = df.loc[df[ent].notna() & df[ts].notna()]
    df = df.sort_values([ent, ts], kind="stable").reset_index(drop=True)
    tie_key = [df[ent], df[ts]]
    codes = pd.factorize(df[ent])[0]  # df is sorted: the codes rise entity by entity
    stamps = df[ts].to_numpy("datetime64[ns]").astype("int64")
    bounds: dict[int, _EntityWindows] = {}  # per window length: several columns share one
    new: dict[str, pd.Series] = {}
    for agg in spec.aggregations:
        numeric_fns = [f for f in agg.functions if f not in ("count", "last")]
        if numeric_fns and not (pd.api.types.is_numeric_dtype(df[agg.column])
                                or pd.api.types.is_bool_dtype(df[agg.column])):
            raise InputError(f"feature view {view.name!r}: aggregation {numeric_fns} of column "
                             f"{agg.column!r} needs numbers, the column holds {df[agg.column].dtype}")
        if numeric_fns:
            values = df[agg.column].astype("float64")
        else:  # count (and last) work on any column: count the values present
            values = df[agg.column].notna().astype("float64").where(df[agg.column].notna())
        for window in agg.windows:
            seconds = duration_seconds(window)
            rolled = [f for f in agg.functions if f != "last"]
            if rolled:
                if seconds not in bounds:
                    bounds[seconds] = _EntityWindows(codes, stamps, seconds)
                result = values.rolling(bounds[seconds], min_periods=1).agg(rolled)
                for fn in rolled:
                    col = pd.Series(result[fn].to_numpy(), index=df.index)
                    # A window whose values are all missing still has a count: zero.
                    new[f"{agg.column}_{fn}_{window}"] = col.fillna(0.0) if fn == "count" else col
            if "last" in agg.functions:
                seen_at = df[ts].where(df[agg.column].notna())
                last_ts = seen_at.groupby(df[ent], sort=False).ffill()
                last_val = df[agg.column].groupby(df[ent], sort=False).ffill()
                fresh = (df[ts] - last_ts) < pd.Timedelta(seconds=seconds)
                new[f"{agg.column}_last_{window}"] = last_val.where(fresh)
    out = pd.DataFrame(new, index=df.index)
    # Ties: every row at the same (entity, ts) gets the state after all of them.
    out = out.groupby(tie_key, sort=False).transform("last")
    for col in out.columns:
        df[col] = out[col]
    return df


def compute_frame(view: FeatureView, df: pd.DataFrame) -> pd.DataFrame:
    """Transformation + aggregations on one in-memory frame (tests, serving, small batches)."""
    df = df.copy()
    df[view.timestamp_column] = to_utc_naive(df[view.timestamp_column], view.timestamp_column)
    df = transform(view, df)
    check_columns(view, list(df.columns), "the transformation's output")
    return aggregate(view, df)

