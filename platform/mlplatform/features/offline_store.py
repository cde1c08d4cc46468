"""The offline store: append-only Parquet under the storage URI, partitioned by feature
view and date, read with pyarrow datasets (partition pruning + predicate pushdown).

    <storage>/features/<pipeline>/views/<view>/date=YYYY-MM-DD/part-<write id>.parquet
    <storage>/features/<pipeline>/served/<service>/date=YYYY-MM-DD/part-<id>.parquet
    <storage>/features/<pipeline>/feedback/date=YYYY-MM-DD/part-<uuid>.parquet

A write is named by its id (the caller derives it from the content, e.g. the batch's
snapshot hash and the view version), one file per date it touches. Each file lands
by one atomic put (storage.publish_file), and rewriting the same id replaces
its files instead of adding copies, so a retried step is idempotent and a failed one
leaves nothing a reader can see.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from pydantic import BaseModel, Field

from mlplatform import storage
from mlplatform.errors import InputError
from mlplatform.features.compute import to_utc_naive
from mlplatform.features.definitions import FeatureView

_COMMITS = "_commits"  # one manifest per committed write; '_' keeps it out of dataset scans
VERSION_KEY = b"mlplatform.view_version"
_PARTITIONING = pads.partitioning(pa.schema([("date", pa.string())]), flavor="hive")


class WriteResult(BaseModel):
    view: str
    write_id: str
    rows: int
    files: list[str]
    dates: list[str]
    content_hash: str = Field(description="sha256 over the written files' hashes.")


class OfflineStore:
    def __init__(self, storage_uri: str, pipeline: str):
        self.root = storage.join(storage_uri, "features", pipeline)
        self.pipeline = pipeline
        # Resolved once, here: a store pickled into Ray tasks (the point-in-time join) reads
        # through this filesystem, endpoint and credentials included, on any node.
        self._fs, self._root_path = storage.resolve(self.root)

    def _resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path) of a URI under this store's root, without resolving it again."""
        base, root = uri.partition("?")[0].rstrip("/"), self.root.partition("?")[0].rstrip("/")
        if base == root or base.startswith(root + "/"):
            return self._fs, self._root_path + base[len(root):]
        return storage.resolve(uri)

    def view_uri(self, view: str) -> str:
        return storage.join(self.root, "views", view)

    # -- writes --------------------------------------------------------------------

    def write(self, view: FeatureView, df: pd.DataFrame, write_id: str) -> WriteResult:
        """Append `df` (key columns + every feature of the view) as write `write_id`."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", write_id):
            raise ValueError(f"write id {write_id!r}: letters, digits, '.', '_', '-' only")
        missing = [c for c in [*view.key_columns, *view.features] if c not in df.columns]
        if missing:
            raise InputError(f"feature view {view.name!r}: rows to write lack column(s) {missing}")
        rows = df[[*view.key_columns, *view.features]].copy()
        for col in (view.timestamp_column, view.created_timestamp_column):
            if col:  # one representation in the store: naive UTC microseconds
                rows[col] = to_utc_naive(rows[col], col)
        # Rows without a key or an event time can never be joined or served.
        rows = rows.loc[rows[view.entity].notna() & rows[view.timestamp_column].notna()]
        table = pa.Table.from_pandas(rows, preserve_index=False)
        table = table.replace_schema_metadata({VERSION_KEY: view.version.encode()})
        return self._write_partitioned(self.view_uri(view.name), view.name, table,
                                       view.timestamp_column, write_id)

    def _write_partitioned(self, uri: str, name: str, table: pa.Table, ts: str,
                           write_id: str) -> WriteResult:
        fs, root = self._resolve(uri)
        dates = pc.strftime(table[ts], format="%Y-%m-%d") if len(table) else pa.array([], pa.string())
        files, hashes, written = [], [], []
        for date in sorted(pc.unique(dates).to_pylist()):
            part = table.filter(pc.equal(dates, date))
            final = f"{root}/date={date}/part-{write_id}.parquet"
            storage.put_table(fs, final, part)  # one atomic put: readers see all of it or none
            files.append(final)
            hashes.append(storage.sha256_file(fs, final))
            written.append(date)
        digest = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        result = WriteResult(view=name, write_id=write_id, rows=len(table), files=files, dates=written,
                             content_hash=digest)
        # The commit: a write exists for readers once its manifest does (one atomic put).
        # A write that failed after some of its date files keeps no manifest, so those
        # files stay invisible until the retry replaces them and commits.
        storage.put_bytes(fs, f"{root}/{_COMMITS}/{write_id}.json", result.model_dump_json().encode())
        return result

    # -- reads ---------------------------------------------------------------------

    def committed_files(self, uri: str, *, start: dt.date | None = None,
                        end: dt.date | None = None) -> list[str]:
        """The Parquet files of the committed writes under `uri` (see _write_partitioned) in
        the date partitions from start to end, by listing alone: a file is committed when
        its write id has a manifest, so no manifest is opened."""
        fs, root = self._resolve(uri)
        if not storage.exists(fs, root):
            return []
        commits = f"{root}/{_COMMITS}"
        ids = ({f.base_name.removesuffix(".json") for f in storage.list_files(fs, commits, (".json",))}
               if storage.exists(fs, commits) else set())
        files = []
        for folder in fs.get_file_info(pafs.FileSelector(root)):
            date = folder.base_name.removeprefix("date=")
            if (folder.type != pafs.FileType.Directory or date == folder.base_name
                    or (start is not None and date < start.isoformat())
                    or (end is not None and date > end.isoformat())):
                continue
            files += [f.path for f in storage.list_files(fs, folder.path, (".parquet",))
                      if f.base_name.removeprefix("part-").removesuffix(".parquet") in ids]
        return sorted(files)

    def writes(self, view: str) -> dict[str, list[str]]:
        """Write id -> its files, for every write of the view."""
        fs, root = self._resolve(self.view_uri(view))
        if not storage.exists(fs, root):
            return {}
        commits = f"{root}/{_COMMITS}"
        if not storage.exists(fs, commits):
            return {}
        out: dict[str, list[str]] = {}
        for info in storage.list_files(fs, commits, (".json",)):
            with fs.open_input_stream(info.path) as src:
                result = WriteResult.model_validate_json(src.read())
            out[result.write_id] = result.files
        return out

    def read(self, view: FeatureView, *, start: dt.datetime | None = None,
             end: dt.datetime | None = None, columns: list[str] | None = None,
             files: list[str] | None = None, created_until: dt.datetime | None = None) -> pd.DataFrame:
        """Rows with start <= event time <= end (pruned by date partition first)."""
        cols = [*view.key_columns, *(columns if columns is not None else view.features)]
        fs, root = self._resolve(self.view_uri(view.name))
        if files is None:  # committed writes only (see _write_partitioned)
            files = [f for fs_ in self.writes(view.name).values() for f in fs_]
        if not files:
            return _empty(cols)
        source = files
        ds = pads.dataset(source, format="parquet", filesystem=fs, partitioning=_PARTITIONING,
                          partition_base_dir=root)
        fragments = list(ds.get_fragments())
        if not fragments:
            return _empty(cols)
        # Views gain features over time: read every file under their union schema.
        schema = pa.unify_schemas([f.physical_schema for f in fragments], promote_options="permissive")
        missing = [c for c in cols if c not in schema.names]
        if missing:
            raise InputError(f"feature view {view.name!r}: the offline store has no column(s) {missing}; "
                             f"run featurize for this view first")
        ds = pads.dataset(source, schema=schema.append(pa.field("date", pa.string())), format="parquet",
                          filesystem=fs, partitioning=_PARTITIONING, partition_base_dir=root)
        expr = time_range(view.timestamp_column, schema.field(view.timestamp_column).type, start, end)
        # Date partitions first, so that pyarrow skips whole folders.
        for bound, op in ((start, pc.greater_equal), (end, pc.less_equal)):
            if bound is not None:
                by_date = op(pc.field("date"), bound.strftime("%Y-%m-%d"))
                expr = by_date if expr is None else by_date & expr
        if created_until is not None and view.created_timestamp_column:
            c = pc.field(view.created_timestamp_column)
            cond = c.is_null() | (c <= pa.scalar(created_until, pa.timestamp("us")))
            expr = cond if expr is None else expr & cond
        table = ds.to_table(columns=cols, filter=expr)
        return table.to_pandas()

    # -- what was served -----------------------------------------------------------

    def served_uri(self, service: str) -> str:
        return storage.join(self.root, "served", service)

    def log_served(self, service: str, records: pd.DataFrame) -> WriteResult:
        """Append the feature vectors a model was served (request_id, entity, event_ts,
        values); retraining can then read exactly what the model saw."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", service):
            raise InputError(f"service {service!r}: use lower-case letters, digits and '_'")
        for col in ("request_id", "entity", "event_ts"):
            if col not in records.columns:
                raise InputError(f"served feature log: column {col!r} is missing; "
                                 f"got {list(records.columns)}")
        df = records.copy()
        if df["event_ts"].isna().any():
            raise InputError("served feature log: every record needs an event_ts")
        df["event_ts"] = to_utc_naive(df["event_ts"], "event_ts")
        df["entity"] = df["entity"].astype(str)
        write_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(4)
        table = pa.Table.from_pandas(df, preserve_index=False)
        return self._write_partitioned(self.served_uri(service), service, table, "event_ts", write_id)

    def read_served(self, service: str, *, start: dt.datetime | None = None,
                    end: dt.datetime | None = None) -> pd.DataFrame:
        fs, root = self._resolve(self.served_uri(service))
        files = self.committed_files(self.served_uri(service))  # never a half-committed write
        if not files:
            return pd.DataFrame(columns=["request_id", "entity", "event_ts"])
        ds = pads.dataset(files, format="parquet", filesystem=fs, partitioning=_PARTITIONING,
                          partition_base_dir=root)
        schema = pa.unify_schemas([f.physical_schema for f in ds.get_fragments()],
                                  promote_options="permissive")
        ds = pads.dataset(files, schema=schema.append(pa.field("date", pa.string())), format="parquet",
                          filesystem=fs, partitioning=_PARTITIONING, partition_base_dir=root)
        expr = time_range("event_ts", schema.field("event_ts").type, start, end)
        df = ds.to_table(columns=schema.names, filter=expr).to_pandas()
        return df.sort_values(["event_ts", "request_id"], kind="stable").reset_index(drop=True)

    # -- feedback: the true outcome of a served request ---------------------------------

    def feedback_uri(self) -> str:
        return storage.join(self.root, "feedback")

    def log_feedback(self, records: pd.DataFrame) -> WriteResult:
        """Append outcomes (request_id, label, event_ts): the label is kept as text, plus
        its number in `label_value` when it is numeric or a bool (else null)."""
        for col in ("request_id", "label", "event_ts"):
            if col not in records.columns:
                raise InputError(f"feedback log: column {col!r} is missing; got {list(records.columns)}")
        if records["request_id"].isna().any() or records["event_ts"].isna().any():
            raise InputError("feedback log: every record needs a request_id and an event_ts")
        df = pd.DataFrame({"request_id": records["request_id"].astype(str),
                           "label": records["label"].map(as_text).astype(object),
                           "label_value": records["label"].map(as_number).astype("float64"),
                           "event_ts": to_utc_naive(records["event_ts"], "event_ts")})
        table = pa.Table.from_pandas(df, preserve_index=False)
        return self._write_partitioned(self.feedback_uri(), "feedback", table, "event_ts",
                                       uuid.uuid4().hex)


def as_text(value: object) -> str | None:
    """A logged value as text; None for a missing one (None, NaN, NaT)."""
    return None if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else str(value)


def as_number(value: object) -> float | None:
    """A logged value as a float when it is a number or a bool; None for text or missing."""
    if isinstance(value, str) or as_text(value) is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def time_range(column: str, typ: pa.DataType, start: dt.datetime | None,
               end: dt.datetime | None) -> pc.Expression | None:
    """start <= column <= end as a pyarrow filter, the bounds (naive = UTC) cast to the
    column's own type, so zoned and naive timestamp columns both compare."""
    def bound(value: dt.datetime) -> pa.Scalar:
        stamp = pd.Timestamp(value)
        stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
        return pa.scalar(stamp if getattr(typ, "tz", None) else stamp.tz_localize(None), typ)

    expr = None
    if start is not None:
        expr = pc.field(column) >= bound(start)
    if end is not None:
        cond = pc.field(column) <= bound(end)
        expr = cond if expr is None else expr & cond
    return expr


def _empty(cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
