"""Reading batch files: what the ingest step and `platformctl validate` share.

A batch file is identified by its content hash, not its name or mtime: a file
copied again or touched is not new, a file rewritten in place is. New files are
read as one Ray Dataset and written under the storage URI in a content-addressed
folder (the snapshot's hash names it), so re-ingesting the same content is a no-op
and every later step reads an immutable copy.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform import storage
from mlplatform.errors import InputError

SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}


class UnreadableFile(InputError):
    """One batch file cannot be ingested; `reason` says why, without the file's name (the
    ingest step records it next to the file)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"batch file {path}: {reason}")
        self.path = path
        self.reason = reason


_READ_ERRORS = (pa.ArrowInvalid, OSError, pa.ArrowNotImplementedError)


def check_readable(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """Fail early, naming the file, rather than deep inside a Ray Data task."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path, filesystem=fs)
        with fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(stream)
            return reader.schema
    except _READ_ERRORS as exc:
        raise UnreadableFile(path, f"cannot be read as {fmt}: {exc}") from None


def check_ingestible(fs: pafs.FileSystem, info: pafs.FileInfo, fmt: str) -> pa.Schema:
    """`check_readable`, plus what makes a readable file useless to ingest: no bytes, or (from a
    Parquet footer, so without reading the data) no rows. A batch of such files alone would
    otherwise fail the ingest on every run."""
    if info.size == 0:
        raise UnreadableFile(info.path, "empty file (0 bytes)")
    schema = check_readable(fs, info.path, fmt)
    if fmt == "parquet":
        try:
            rows = pq.read_metadata(info.path, filesystem=fs).num_rows
        except _READ_ERRORS as exc:
            raise UnreadableFile(info.path, f"cannot be read as {fmt}: {exc}") from None
        if rows == 0:
            raise UnreadableFile(info.path, "no rows")
    return schema


def check_parses(fs: pafs.FileSystem, path: str, fmt: str) -> int:
    """Read the whole file, one record batch at a time (memory: one batch), and return its rows.

    The footer or the first CSV block can be fine while a page or a line further on is not;
    only a full read finds that. The ingest step does this only after reading the batch on
    Ray failed, to find which files to blame."""
    try:
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                return sum(b.num_rows for b in pq.ParquetFile(f).iter_batches())
        with fs.open_input_stream(path, compression="detect") as stream:
            rows = sum(b.num_rows for b in pacsv.open_csv(stream))
    except _READ_ERRORS as exc:
        raise UnreadableFile(path, f"cannot be parsed as {fmt}: {exc}") from None
    if rows == 0:
        raise UnreadableFile(path, "no rows")
    return rows


def _unifies(a: pa.Field, b: pa.Field) -> bool:
    try:
        pa.unify_schemas([pa.schema([a]), pa.schema([b])], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _conflict(schema: pa.Schema, fields: dict[str, tuple[pa.Field, str]]) -> str | None:
    """Why `schema` cannot join files whose fields are `fields` (None: it can)."""
    for field in schema:
        if field.name in fields and not _unifies(fields[field.name][0], field):
            first, first_path = fields[field.name]
            return f"column {field.name!r} has type {field.type}, not {first.type} as in {first_path}"
    return None


def split_consistent(schemas: dict[str, pa.Schema]) -> tuple[list[str], dict[str, str]]:
    """Keep the files that make one table; (kept paths, {rejected path: reason}).

    A file whose column types conflict with the others is the odd one out: files are taken
    in order of how many others they agree with (most first; ties in the given order,
    which is by name, so for dated files the older), and a file that conflicts with one
    already kept is rejected. So one bad file among good ones is the one set aside, even
    when it comes first, and of two disagreeing files the first is kept."""
    paths = list(schemas)
    agrees = {p: sum(_conflict(schemas[p], {f.name: (f, q) for f in schemas[q]}) is None
                     for q in paths if q != p) for p in paths}
    kept: list[str] = []
    rejected: dict[str, str] = {}
    fields: dict[str, tuple[pa.Field, str]] = {}
    for path in sorted(paths, key=lambda p: -agrees[p]):
        reason = _conflict(schemas[path], fields)
        if reason is not None:
            rejected[path] = reason
            continue
        kept.append(path)
        for field in schemas[path]:
            fields.setdefault(field.name, (field, path))
    return [p for p in paths if p in kept], rejected


def check_consistent(schemas: dict[str, pa.Schema]) -> None:
    """One batch is one table: a column may not change type from file to file in a way
    Arrow cannot unify (the reader would fail later, and less clearly)."""
    seen: dict[str, tuple[pa.Field, str]] = {}
    for path, schema in schemas.items():
        for field in schema:
            if field.name in seen:
                first, first_path = seen[field.name]
                if not _unifies(first, field):
                    raise InputError(f"column {field.name!r} has mixed types: {first.type} in "
                                     f"{first_path}, {field.type} in {path}")
            else:
                seen[field.name] = (field, path)


def batch_files(path: str, fmt: str, field: str = "source.path") -> tuple[pafs.FileSystem, list[str]]:
    """The readable, non-empty batch files at `path`; a clear error for anything else."""
    fs, root = storage.resolve(path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[fmt])
    except FileNotFoundError:
        raise InputError(f"{field} {path!r}: no such file or folder") from None
    if not files:
        raise InputError(f"{field} {path!r}: no .{fmt} files")
    check_consistent({f.path: check_readable(fs, f.path, fmt) for f in files})
    paths = [f.path for f in files]
    if fmt == "parquet" and pads.dataset(paths, format="parquet", filesystem=fs).count_rows() == 0:
        raise InputError(f"{field} {path!r}: the batch has no rows")
    return fs, paths


def snapshot_hash(file_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()
