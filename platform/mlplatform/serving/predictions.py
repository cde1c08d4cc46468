"""The prediction log, read side: what the model server replicas logged (serve/predlog.py
writes it through the offline store) and the outcomes fed back for those requests.

    <storage>/features/<pipeline>/served/<service>/date=YYYY-MM-DD/part-<id>.parquet
    <storage>/features/<pipeline>/feedback/date=YYYY-MM-DD/part-<uuid>.parquet

One row per prediction: PREDICTION_COLUMNS, then one column per feature value the model
saw. Versions differ in their features, and a feature may change type between versions,
so every read unifies the parts' schemas: a column a part lacks reads as null, and a
column whose types cannot be promoted (a number in one part, text in another) reads as
text. Only committed writes are read (OfflineStore.committed_files): a write that failed
halfway and was retried under a new id never shows twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from mlplatform import storage
from mlplatform.features.offline_store import OfflineStore, time_range

if TYPE_CHECKING:
    import ray.data

# The keys of every prediction record (serve/predlog.py); the features the model saw
# follow, one key per feature, named by the feature.
PREDICTION_FIELDS = ("request_id", "event_ts", "pipeline", "version", "variant", "entity", "output",
                     "latency_ms")
# As stored: `output` as text (a classifier's label as given), `score` its number (a score
# the record carries, else the output when numeric, else null).
# `error`: null for an answer; for a request the model failed on (a 500), its exception's
# type and message, with null output: what the success-rate guardrail of a rollout counts.
PREDICTION_COLUMNS = ("request_id", "event_ts", "pipeline", "version", "variant", "entity", "output",
                      "score", "latency_ms", "error")
VARIANTS = ("champion", "challenger", "shadow", "pinned")  # or a version label
FEEDBACK_COLUMNS = ("request_id", "label", "label_value", "event_ts")


def prediction_files(storage_uri: str, pipeline: str, service: str, *, since: dt.datetime | None = None,
                     until: dt.datetime | None = None) -> tuple[pafs.FileSystem, list[str]]:
    """The committed prediction log parts in the date partitions from since to until."""
    store = OfflineStore(storage_uri, pipeline)
    return _files(store, store.served_uri(service), since, until)


def feedback_files(storage_uri: str, pipeline: str, *, since: dt.datetime | None = None,
                   until: dt.datetime | None = None) -> tuple[pafs.FileSystem, list[str]]:
    store = OfflineStore(storage_uri, pipeline)
    return _files(store, store.feedback_uri(), since, until)


def read_predictions(storage_uri: str, pipeline: str, service: str, *, since: dt.datetime | None = None,
                     until: dt.datetime | None = None, features: bool = True) -> pd.DataFrame:
    """Predictions with since <= event_ts <= until (naive = UTC), oldest first. `features=False`
    reads PREDICTION_COLUMNS only (a rollout's checks: a fraction of the bytes)."""
    fs, files = prediction_files(storage_uri, pipeline, service, since=since, until=until)
    return _read(fs, files, PREDICTION_COLUMNS, since, until, only_first=not features)


def predictions_dataset(storage_uri: str, pipeline: str, service: str, *,
                        since: dt.datetime | None = None,
                        until: dt.datetime | None = None) -> ray.data.Dataset:
    """The same rows as read_predictions as a Ray Dataset (no order), read by Ray's tasks."""
    import ray.data

    fs, files = prediction_files(storage_uri, pipeline, service, since=since, until=until)
    if not files:
        return ray.data.from_arrow(pa.schema([(c, pa.null()) for c in PREDICTION_COLUMNS]).empty_table())
    schema = _schema(fs, files, PREDICTION_COLUMNS)
    ds = ray.data.read_parquet(files, filesystem=fs, schema=schema, partitioning=None)
    expr = time_range("event_ts", schema.field("event_ts").type, since, until)
    if expr is None:
        return ds
    return ds.map_batches(lambda batch: batch.filter(expr), batch_format="pyarrow")


def read_feedback(storage_uri: str, pipeline: str, *, since: dt.datetime | None = None,
                  until: dt.datetime | None = None) -> pd.DataFrame:
    """Feedback (request_id, label, label_value, event_ts) with since <= event_ts <= until."""
    fs, files = feedback_files(storage_uri, pipeline, since=since, until=until)
    return _read(fs, files, FEEDBACK_COLUMNS, since, until)


def joined_feedback(storage_uri: str, pipeline: str, service: str, *, since: dt.datetime | None = None,
                    until: dt.datetime | None = None, features: bool = True) -> pd.DataFrame:
    """read_predictions left-joined on request_id with the latest feedback for each request
    (any feedback from `since` on: outcomes arrive after the prediction), as `label`,
    `label_value` and `feedback_ts`; null where none came. Compare `output` with `label`
    (text), or `score` with `label_value` (numbers: 1 and 1.0 are equal there)."""
    preds = read_predictions(storage_uri, pipeline, service, since=since, until=until, features=features)
    fb = read_feedback(storage_uri, pipeline, since=since)
    latest = (fb.sort_values("event_ts", kind="stable").drop_duplicates("request_id", keep="last")
              .rename(columns={"event_ts": "feedback_ts"})[["request_id", "label", "label_value",
                                                             "feedback_ts"]])
    latest["request_id"] = latest["request_id"].astype(preds["request_id"].dtype)
    return preds.merge(latest, on="request_id", how="left", validate="many_to_one")


def known_request_ids(storage_uri: str, pipeline: str, service: str, ids: Iterable[str], *,
                      since: dt.datetime | None = None) -> set[str]:
    """The ids among `ids` that the persisted prediction log holds: a scan of the request_id
    column alone, filtered on it (`since` skips older date partitions)."""
    wanted = pa.array(sorted({str(i) for i in ids}), pa.large_string())
    if not len(wanted):
        return set()
    fs, files = prediction_files(storage_uri, pipeline, service, since=since)
    if not files:
        return set()
    ds = pads.dataset(files, schema=pa.schema([("request_id", pa.large_string())]), format="parquet",
                      filesystem=fs)
    table = ds.to_table(columns=["request_id"], filter=pc.field("request_id").isin(wanted))
    return set(table.column("request_id").to_pylist())


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for parts written with different columns and types: pyarrow's permissive
    promotion (null -> any, int -> float, ...), and text for a column whose types it cannot
    promote; fields in the order they first appear."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    fields = []
    for name, typs in types.items():
        try:
            typ = pa.unify_schemas([pa.schema([(name, t)]) for t in typs],
                                   promote_options="permissive").field(name).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            typ = pa.large_string()
        fields.append(pa.field(name, typ))
    return pa.schema(fields)


# -- internals -----------------------------------------------------------------------------


def _files(store: OfflineStore, uri: str, since: dt.datetime | None,
           until: dt.datetime | None) -> tuple[pafs.FileSystem, list[str]]:
    fs, _ = storage.resolve(uri)
    return fs, store.committed_files(uri, start=_utc_date(since), end=_utc_date(until))


def _utc_date(value: dt.datetime | None) -> dt.date | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return (stamp.tz_convert("UTC") if stamp.tzinfo else stamp).date()


def _schema(fs: pafs.FileSystem, files: list[str], first: tuple[str, ...]) -> pa.Schema:
    """The parts' unified schema, the known columns first."""
    fragments = pads.dataset(files, format="parquet", filesystem=fs).get_fragments()
    schema = unified_schema([f.physical_schema for f in fragments])
    order = [c for c in first if c in schema.names] + [c for c in schema.names if c not in first]
    return pa.schema([schema.field(c) for c in order])


def _read(fs: pafs.FileSystem, files: list[str], first: tuple[str, ...], since: dt.datetime | None,
          until: dt.datetime | None, *, only_first: bool = False) -> pd.DataFrame:
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in first})
    schema = _schema(fs, files, first)
    ds = pads.dataset(files, schema=schema, format="parquet", filesystem=fs)
    columns = [c for c in first if c in schema.names] if only_first else None
    table = ds.to_table(columns=columns,
                        filter=time_range("event_ts", schema.field("event_ts").type, since, until))
    df = table.to_pandas()
    for column in first:  # parts written before a column existed (the log's `error`)
        if column not in df.columns:
            df[column] = pd.Series(None, index=df.index, dtype=object)
    return df.sort_values(["event_ts", "request_id"], kind="stable").reset_index(drop=True)
