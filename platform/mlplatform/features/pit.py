"""The point-in-time join: for each entity row (entity, t), the feature row of that
entity with the latest event time <= t, not created after t, and at most `ttl` old.

Vectorised with pandas.merge_asof; no per-row Python. A row is visible at t once
both its event and its creation time have passed: its availability time is
max(event_ts, created_ts). Among visible rows the newest *event* wins (ties: the
newest created_ts, then the row written last), which is not always the row that
became available last (a late backfill of an old event). So the right side is sorted
by availability and carries, per entity, a running arg-max of (event_ts, created_ts,
position); merge_asof finds the last available row and the arg-max at that row is
the answer. The TTL is checked on the answer's event time: every other visible row
is older, so an expired answer means nothing in the window.

The same order (event_ts, created_ts, position) decides what `latest_per_entity`
keeps for the online store, so online reads and offline joins agree.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlplatform.errors import InputError

ROW = "_mlp_row"
ROW_TS = "_mlp_row_ts"
STATUS = "_status"  # per row: MATCHED, EXPIRED (older than the TTL) or MISSING (nothing before)
MATCHED, EXPIRED, MISSING = 0, 1, 2
_NAT = np.iinfo(np.int64).min  # NaT as int64 microseconds


class JoinStats(BaseModel):
    rows: int
    matched: int
    expired: int = 0
    missing: int = 0

    @classmethod
    def of(cls, status: pd.Series) -> JoinStats:
        counts = np.bincount(status.to_numpy(dtype="int64"), minlength=3)
        return cls(rows=len(status), matched=int(counts[MATCHED]), expired=int(counts[EXPIRED]),
                   missing=int(counts[MISSING]))


def _micros(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[us]").astype("int64")


def _order_key(event: np.ndarray, created: np.ndarray | None) -> np.ndarray:
    """Rank of each row by (event_ts, created_ts, position): larger is newer."""
    pos = np.arange(len(event))
    keys = (pos, event) if created is None else (pos, created, event)
    order = np.lexsort(keys)
    rank = np.empty(len(event), dtype=np.int64)
    rank[order] = np.arange(len(event))
    return rank


def latest_per_entity(df: pd.DataFrame, entity: str, ts: str, created: str | None) -> pd.DataFrame:
    """The newest row per entity by (event_ts, created_ts, position)."""
    if df.empty:
        return df
    event = _micros(df[ts])
    cre = _micros(df[created]) if created else None
    if cre is not None:
        cre = np.where(cre == _NAT, event, cre)
    rank = _order_key(event, cre)
    best = pd.Series(rank, index=df.index).groupby(df[entity].to_numpy(), sort=False).idxmax()
    return df.loc[best.to_numpy()]


def point_in_time_join(entity_df: pd.DataFrame, features: pd.DataFrame, *, entity: str,
                       entity_ts: str, feature_ts: str, created_ts: str | None,
                       ttl: dt.timedelta | None, columns: list[str]) -> tuple[pd.DataFrame, JoinStats]:
    """`columns` of `features` for each row of `entity_df`, aligned with its index.

    Also returns the chosen row's event time (`_event_ts`), so that callers can audit
    that nothing came from the future, and each row's `_status`.
    """
    if entity_df[entity_ts].isna().any():
        bad = int(entity_df[entity_ts].isna().sum())
        raise InputError(f"entity rows: {bad} row(s) without a timestamp in {entity_ts!r}")
    n = len(entity_df)
    right = features.loc[features[entity].notna() & features[feature_ts].notna()]
    if len(right) == 0 or n == 0:
        # All missing, in the feature rows' own dtypes (numbers widen to float for NaN).
        empty = features[columns].iloc[:0].reindex(range(n))
        empty.index = entity_df.index
        empty["_event_ts"] = pd.Series([pd.NaT] * n, dtype="datetime64[us]", index=entity_df.index)
        empty[STATUS] = np.full(n, MISSING, dtype="int8")
        return empty, JoinStats(rows=n, matched=0, missing=n)
    left_keys, right_keys = _same_dtype(entity_df[entity], right[entity], entity)
    left = pd.DataFrame({entity: left_keys, ROW_TS: _micros(entity_df[entity_ts]), ROW: np.arange(n)})
    event = _micros(right[feature_ts])
    created = _micros(right[created_ts]) if created_ts else None
    if created is not None:  # a missing created_ts counts as "created at the event", here and online
        created = np.where(created == _NAT, event, created)
    avail = event if created is None else np.maximum(event, created)
    keys = pd.DataFrame({entity: right_keys, ROW_TS: avail, "_pos": np.arange(len(right))})
    if created is None:
        # Availability is the event time: merge_asof's last row at or before t (ties:
        # the later position, kept by the stable sort) is already the answer.
        keys = keys.sort_values(ROW_TS, kind="stable")
    else:
        rank = _order_key(event, created)
        keys["_rank"] = rank
        keys = keys.sort_values(ROW_TS, kind="stable")
        # Running arg-max of the rank per entity, in availability order.
        best_rank = keys.groupby(entity, sort=False)["_rank"].cummax().to_numpy()
        pos_of_rank = np.empty(len(right), dtype=np.int64)
        pos_of_rank[rank] = np.arange(len(right))
        keys["_pos"] = pos_of_rank[best_rank]
    left = left.sort_values(ROW_TS, kind="stable")
    merged = pd.merge_asof(left, keys[[entity, ROW_TS, "_pos"]], on=ROW_TS, by=entity,
                           direction="backward", allow_exact_matches=True)
    pos = merged["_pos"].to_numpy(dtype="float64", na_value=np.nan)
    found = ~np.isnan(pos)
    pos_i = np.where(found, pos, 0).astype(np.int64)
    fresh = found.copy()
    if ttl is not None:
        age = merged[ROW_TS].to_numpy() - event[pos_i]
        fresh &= age <= int(ttl.total_seconds() * 1_000_000)
    # Back to the caller's row order: merged row i answers entity row merged[ROW][i].
    order = np.empty(n, dtype=np.int64)
    order[merged[ROW].to_numpy()] = np.arange(n)
    pick, ok = pos_i[order], fresh[order]
    out = pd.DataFrame(index=entity_df.index)
    for col in columns:
        values = pd.Series(right[col].to_numpy()[pick], index=entity_df.index)
        out[col] = values if ok.all() else values.where(ok)
    stamps = pd.Series(event[pick], index=entity_df.index).astype("datetime64[us]")
    out["_event_ts"] = stamps.where(ok)
    out[STATUS] = np.where(fresh, MATCHED, np.where(found, EXPIRED, MISSING)).astype("int8")[order]
    return out, JoinStats.of(out[STATUS])


def _same_dtype(left: pd.Series, right: pd.Series, entity: str) -> tuple[np.ndarray, np.ndarray]:
    """merge_asof's `by` keys must share a dtype; entity ids read from different files
    may not (int vs float, string vs dictionary)."""
    def plain(s: pd.Series) -> pd.Series:
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype(s.cat.categories.dtype)
        if pd.api.types.is_string_dtype(s.dtype):
            return s.astype(object)
        return s

    lk, rk = plain(left), plain(right)
    numeric = pd.api.types.is_numeric_dtype
    if numeric(lk.dtype) != numeric(rk.dtype):
        # Ids stored as text on one side and numbers on the other: compare them as the
        # online store does, as text keys (1 and 1.0 both become "1").
        from mlplatform.features.online_store import entity_key

        return (np.array([entity_key(v) if pd.notna(v) else None for v in lk], dtype=object),
                np.array([entity_key(v) if pd.notna(v) else None for v in rk], dtype=object))
    if lk.dtype != rk.dtype:
        try:
            lk = lk.astype(rk.dtype)
        except (ValueError, TypeError):
            raise InputError(f"entity column {entity!r}: entity rows hold {left.dtype}, the feature "
                             f"rows {right.dtype}") from None
    return lk.to_numpy(), rk.to_numpy()
