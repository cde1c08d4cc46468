"""Feature computation: a view's row-wise transformation, then its per-entity windowed
aggregations, on pandas batches (so the same functions run in Ray Data tasks for a
batch and in-process for a single row at serving time).

Window semantics: the aggregate at an event (entity e, time t) covers the events of e
with t - window < ts <= t, the event itself included (it is known at t). Events of
one entity at the same timestamp all get the aggregate over all of them: the state
"at time t" cannot depend on the order rows arrived in. pandas' time-based rolling
windows do the work; ties and `last` (the last non-null value within the window,
which rolling does not offer) are handled around it.
"""

from __future__ import annotations

import pandas as pd

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
                frame = pd.DataFrame({ent: df[ent], ts: df[ts], "v": values})
                result = (frame.groupby(ent, sort=False)
                          .rolling(f"{seconds}s", on=ts, closed="right")["v"]
                          .agg(rolled))
                # Rows come back grouped by entity in order of first appearance, each group
                # in frame order; df is sorted by entity, so positions line up with df's.
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

