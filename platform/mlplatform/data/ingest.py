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


def check_readable(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """Fail early, naming the file, rather than deep inside a Ray Data task."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path, filesystem=fs)
        with fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(stream)
            return reader.schema
    except (pa.ArrowInvalid, OSError, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"batch file {path}: cannot be read as {fmt}: {exc}") from None


def check_consistent(schemas: dict[str, pa.Schema]) -> None:
    """One batch is one table: a column may not change type from file to file in a way
    Arrow cannot unify (the reader would fail later, and less clearly)."""
    seen: dict[str, tuple[pa.Field, str]] = {}
    for path, schema in schemas.items():
        for field in schema:
            if field.name in seen:
                first, first_path = seen[field.name]
                try:
                    pa.unify_schemas([pa.schema([first]), pa.schema([field])],
                                     promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    raise InputError(f"column {field.name!r} has mixed types: {first.type} in "
                                     f"{first_path}, {field.type} in {path}") from None
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
