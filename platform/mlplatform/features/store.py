"""`FeatureStore`: the one facade over feature views, the offline and the online store
(like Feast's `FeatureStore`): compute, write, build point-in-time training sets,
materialise, read online vectors, log what was served.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from mlplatform.errors import InputError
from mlplatform.features.compute import compute_frame, to_utc_naive
from mlplatform.features.definitions import (
    FeatureRef,
    FeatureView,
    parse_refs,
    resolve_service,
    resolve_views,
    service_version,
)
from mlplatform.features.offline_store import OfflineStore, WriteResult
from mlplatform.features.online_store import OnlineStore, entity_key, open_online_store, rows_to_payloads
from mlplatform.features.pit import STATUS, JoinStats, latest_per_entity, point_in_time_join
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec

# Above this many entity rows (and with Ray connected) the join runs as Ray Data tasks,
# one per time range, each reading only the date partitions its rows can see.
RAY_JOIN_MIN_ROWS = 1_000_000

# Feast's field statuses, so that users of both read the same words.
PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = "PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"


class ViewJoinReport(BaseModel):
    view: str
    version: str
    rows: int
    matched: int
    unmatched: int = Field(description="Rows with no value of the view within its TTL (they get "
                                       "nulls). Older values are not read, so 'expired' and 'never "
                                       "seen' are one count here.")
    null_counts: dict[str, int]


class TrainingSetReport(BaseModel):
    service: str
    rows: int
    features: list[str]
    views: list[ViewJoinReport]
    view_versions: dict[str, str]
    engine: str
    seconds: float


@dataclass
class TrainingSet:
    df: pd.DataFrame
    report: TrainingSetReport


class MaterializeReport(BaseModel):
    view: str
    mode: Literal["incremental", "range"]
    writes: int = 0
    rows_read: int
    entities_written: int
    seconds: float


class OnlineVector(BaseModel):
    entity: str
    values: dict[str, Any]
    statuses: dict[str, str]
    event_ts: dict[str, dt.datetime | None]


def _naive_utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


class FeatureStore:
    def __init__(self, spec: PipelineSpec, settings: Settings, *, online_url: str | None = None):
        self.spec = spec
        self.settings = settings
        self.views: dict[str, FeatureView] = resolve_views(spec)
        self.offline = OfflineStore(settings.storage_uri, spec.name)
        self._online_url = online_url or settings.online_store_url
        self._online: OnlineStore | None = None

    @property
    def online(self) -> OnlineStore:
        if self._online is None:
            self._online = open_online_store(self._online_url)
        return self._online

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise InputError(f"feature view {name!r} is not defined in pipeline {self.spec.name!r}; "
                             f"views: {sorted(self.views)}")
        return self.views[name]

    def features(self, features: str | list[str] | None) -> tuple[str, list[FeatureRef]]:
        """A feature service name, a list of 'view:feature' refs, or None (the model's service)."""
        if isinstance(features, list):
            name, refs = "adhoc", parse_refs(features, self.views)
        else:
            name, refs = resolve_service(self.spec, self.views, features or self.spec.model.feature_service)
        names = [r.feature for r in refs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise InputError(f"feature service {name!r}: feature name(s) {clash} come from more than "
                             "one view; pick one per name")
        return name, refs

    # -- offline -------------------------------------------------------------------

    def compute(self, view: str, df: pd.DataFrame) -> pd.DataFrame:
        return compute_frame(self.view(view), df)

    def write(self, view: str, df: pd.DataFrame, write_id: str) -> WriteResult:
        return self.offline.write(self.view(view), df, write_id)

    def get_training_set(self, entity_df: pd.DataFrame, features: str | list[str] | None = None, *,
                         timestamp_column: str | None = None,
                         engine: Literal["auto", "local", "ray"] = "auto") -> TrainingSet:
        """For each entity row, every requested feature as it was known at the row's time."""
        t0 = time.perf_counter()
        service, refs = self.features(features)
        ts = timestamp_column or self.spec.source.timestamp_column
        by_view: dict[str, list[str]] = {}
        for r in refs:
            by_view.setdefault(r.view, []).append(r.feature)
        needed = [ts, *{self.views[v].entity for v in by_view}]
        missing = [c for c in needed if c not in entity_df.columns]
        if missing:
            raise InputError(f"entity rows lack column(s) {missing}; they need the entity key(s) and "
                             f"the timestamp {ts!r}; got {list(entity_df.columns)}")
        if entity_df[ts].isna().any():
            raise InputError(f"entity rows: {int(entity_df[ts].isna().sum())} row(s) without a timestamp "
                             f"in {ts!r}")
        clash = sorted(set(entity_df.columns) & {r.feature for r in refs} - set(needed))
        if clash:
            raise InputError(f"entity rows already have column(s) {clash}, which are also requested "
                             "features: rename them or leave them out of the request")
        rows = entity_df.copy()
        rows[ts] = to_utc_naive(rows[ts], ts)
        use_ray = engine == "ray" or (engine == "auto" and len(rows) >= RAY_JOIN_MIN_ROWS and _ray_up())
        reports = []
        for name, feats in by_view.items():
            view = self.views[name]
            if use_ray:
                joined, stats = _join_with_ray(self.offline, view, rows, ts, feats)
            else:
                joined, stats = join_view(self.offline, view, rows, ts, feats)
            for f in feats:
                rows[f] = joined[f]
            rows[f"{name}__event_ts"] = joined["_event_ts"]
            reports.append(ViewJoinReport(
                view=name, version=view.version, rows=stats.rows, matched=stats.matched,
                unmatched=stats.rows - stats.matched,
                null_counts={f: int(joined[f].isna().sum()) for f in feats}))
        report = TrainingSetReport(service=service, rows=len(rows), features=[r.feature for r in refs],
                                   views=reports, view_versions=service_version(self.views, refs),
                                   engine="ray" if use_ray else "local",
                                   seconds=round(time.perf_counter() - t0, 4))
        return TrainingSet(df=rows, report=report)

    # -- online --------------------------------------------------------------------

    def materialize(self, views: list[str] | None = None, *, since: dt.datetime | None = None,
                    until: dt.datetime | None = None,
                    on_view: Callable[[MaterializeReport], None] | None = None) -> list[MaterializeReport]:
        """Copy the newest row per entity to the online store.

        Without bounds: incremental, only the offline writes this online store has not
        seen. With --since / --until: every row with an event time in the range (and,
        with --until, created by then), whatever was materialised before.
        """
        since, until = _naive_utc(since), _naive_utc(until)
        out = []
        for name in views or list(self.views):
            view = self.view(name)
            t0 = time.perf_counter()
            if since is None and until is None:
                done = self.online.materialized_writes(view)
                todo = {w: f for w, f in sorted(self.offline.writes(name).items()) if w not in done}
                files = [p for fs in todo.values() for p in fs]
                df = self.offline.read(view, files=files) if files else None
                mode: Literal["incremental", "range"] = "incremental"
            else:
                todo = {}
                df = self.offline.read(view, start=since, end=until, created_until=until)
                mode = "range"
            rows_read = 0 if df is None else len(df)
            written = 0
            if df is not None and len(df):
                latest = latest_per_entity(df, view.entity, view.timestamp_column,
                                           view.created_timestamp_column)
                written = self.online.write(view, rows_to_payloads(view, latest))
            if todo:
                self.online.mark_materialized(view, list(todo))
            report = MaterializeReport(view=name, mode=mode, writes=len(todo), rows_read=rows_read,
                                       entities_written=written,
                                       seconds=round(time.perf_counter() - t0, 4))
            if on_view:
                on_view(report)
            out.append(report)
        return out

    def get_online_features(self, entities: list[Any], features: str | list[str] | None = None, *,
                            at: dt.datetime | None = None) -> list[OnlineVector]:
        """The serving-time vector of each entity; expired values come back as None with
        status OUTSIDE_MAX_AGE, unknown entities with NOT_FOUND."""
        _, refs = self.features(features)
        return read_online(self.online, self.views, refs, entities, at=at)

    def log_served(self, records: pd.DataFrame | list[dict[str, Any]],
                   service: str | None = None) -> WriteResult:
        """Append served feature vectors (request_id, entity, event_ts, values...)."""
        df = pd.DataFrame(records) if isinstance(records, list) else records
        name = service or self.spec.model.feature_service or "all_features"
        return self.offline.log_served(name, df)

    def read_served(self, service: str | None = None, **bounds: Any) -> pd.DataFrame:
        return self.offline.read_served(service or self.spec.model.feature_service or "all_features",
                                        **bounds)

    def close(self) -> None:
        if self._online is not None:
            self._online.close()


def read_online(online: OnlineStore, views: dict[str, FeatureView], refs: list[FeatureRef],
                entities: list[Any], *, at: dt.datetime | None = None) -> list[OnlineVector]:
    """Online vectors for `refs`, the TTL checked against `at` (default: now)."""
    keys = [entity_key(e) for e in entities]
    now = _naive_utc(at) or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    now_us = int(np.datetime64(now, "us").astype("int64"))
    vectors = [OnlineVector(entity=k, values={}, statuses={}, event_ts={}) for k in keys]
    by_view: dict[str, list[str]] = {}
    for r in refs:
        by_view.setdefault(r.view, []).append(r.feature)
    for name, feats in by_view.items():
        view = views[name]
        ttl_us = view.ttl_s * 1_000_000
        for vec, stored in zip(vectors, online.read(view, keys), strict=True):
            if stored is None:
                status, values, event = NOT_FOUND, {}, None
            else:
                event_us, _, values = stored
                event = pd.Timestamp(event_us, unit="us").to_pydatetime()
                status = OUTSIDE_MAX_AGE if now_us - event_us > ttl_us or event_us > now_us else PRESENT
            vec.event_ts[name] = event
            for f in feats:
                value = values.get(f) if status == PRESENT else None
                vec.values[f] = value
                vec.statuses[f] = NULL_VALUE if status == PRESENT and value is None else status
    return vectors


def join_view(offline: OfflineStore, view: FeatureView, rows: pd.DataFrame, ts: str,
              feats: list[str]) -> tuple[pd.DataFrame, JoinStats]:
    """One view's features for `rows`, reading only the partitions the rows can see."""
    if rows.empty:
        return point_in_time_join(rows, offline.read(view, columns=feats).iloc[:0], entity=view.entity,
                                  entity_ts=ts, feature_ts=view.timestamp_column,
                                  created_ts=view.created_timestamp_column, ttl=view.ttl, columns=feats)
    start = rows[ts].min() - view.ttl
    feats_df = offline.read(view, start=start.to_pydatetime(), end=rows[ts].max().to_pydatetime(),
                            columns=feats)
    return point_in_time_join(rows, feats_df, entity=view.entity, entity_ts=ts,
                              feature_ts=view.timestamp_column, created_ts=view.created_timestamp_column,
                              ttl=view.ttl, columns=feats)


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _join_with_ray(offline: OfflineStore, view: FeatureView, rows: pd.DataFrame, ts: str,
                   feats: list[str]) -> tuple[pd.DataFrame, JoinStats]:
    """The join as Ray Data tasks over time-ordered chunks of the entity rows: each task
    reads the feature rows of its own time range only, so no task sees all the data."""
    import ray

    ordered = rows[[view.entity, ts]].copy()
    ordered["_mlp_pos"] = np.arange(len(rows))
    ordered = ordered.sort_values(ts, kind="stable")
    parallelism = max(2, int(ray.cluster_resources().get("CPU", 2)))
    step = -(-len(ordered) // parallelism)
    chunks = [ordered.iloc[i:i + step] for i in range(0, len(ordered), step)]

    def join_chunk(batch: pd.DataFrame) -> pd.DataFrame:
        joined, _ = join_view(offline, view, batch, ts, feats)
        joined["_mlp_pos"] = batch["_mlp_pos"].to_numpy()
        return joined

    ds = ray.data.from_pandas(chunks).map_batches(join_chunk, batch_format="pandas", batch_size=None)
    # Through Arrow, as the local path reads the store: the same pandas dtypes either way.
    joined = pa.concat_tables([ray.get(ref) for ref in ds.to_arrow_refs()],
                              promote_options="permissive").to_pandas()
    joined = joined.sort_values("_mlp_pos").drop(columns=["_mlp_pos"])
    joined.index = rows.index
    return joined, JoinStats.of(joined[STATUS])
