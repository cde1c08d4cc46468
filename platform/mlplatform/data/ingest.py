"""Reading batch files: what the ingest step and `platformctl validate` share.

A batch file is identified by its content hash, not its name or mtime: a file
copied again or touched is not new, a file rewritten in place is. New files are
read as one Ray Dataset and written under the storage URI in a content-addressed
folder (the snapshot's hash names it), so re-ingesting the same content is a no-op
and every later step reads an immutable copy.

The checks here tell a file's content from its storage: a file that is empty, has no
rows, or does not parse is bad for good (those bytes will never ingest), while an I/O
error while reading it (an S3 503 or timeout, NFS trouble, a permission changed) says
nothing about its bytes. Arrow raises OSError for both (a Parquet page header that does
not deserialize, a gzip stream that does not inflate), so the checks read through
`_Guarded`, which marks the storage's own errors; `UnreadableFile.io_error` carries the
verdict, and the ingest step remembers only content verdicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform import storage
from mlplatform.errors import InputError

SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}

T = TypeVar("T")


class UnreadableFile(InputError):
    """One batch file cannot be ingested; `reason` says why, without the file's name (the
    ingest step records it next to the file).

    `io_error`: the storage failed while reading it, so its content was not judged; it may
    well be fine, and it is the operation that failed (exit 1), not the input."""

    def __init__(self, path: str, reason: str, *, io_error: bool = False):
        super().__init__(f"batch file {path}: {reason}", exit_code=1 if io_error else None)
        self.path = path
        self.reason = reason
        self.io_error = io_error


class _StorageError(OSError):
    """An OSError of the storage under a reader, not of the reader parsing the bytes."""


class _Guarded:
    """A storage file for `pa.PythonFile` whose I/O errors come out as `_StorageError`
    (Arrow re-raises a Python file's own exception), so they can be told from the
    reader's OSErrors about the content."""

    def __init__(self, f: pa.NativeFile):
        self._f = f

    @staticmethod
    def _io(fn: Callable[..., T], *args: int | None) -> T:
        try:
            return fn(*args)
        except OSError as exc:
            raise _StorageError(str(exc)) from exc

    def read(self, nbytes: int | None = None) -> bytes:
        return self._io(self._f.read, None if nbytes is None or nbytes < 0 else nbytes)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._io(self._f.seek, offset, whence)

    def tell(self) -> int:
        return self._io(self._f.tell)

    def close(self) -> None:
        self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed


def _open(fs: pafs.FileSystem, path: str, *, stream: bool = False) -> pa.NativeFile:
    """`path` opened for a reader through `_Guarded` (a CSV stream, gunzipped by its suffix)."""
    try:
        raw = fs.open_input_stream(path, compression=None) if stream else fs.open_input_file(path)
    except OSError as exc:
        raise _StorageError(str(exc)) from exc
    f = pa.PythonFile(_Guarded(raw), mode="r")
    return pa.input_stream(f, compression="gzip") if stream and path.endswith(".gz") else f


# What a reader raises for bytes it cannot use; an OSError here is the reader's (the
# storage's own are `_StorageError`, caught first).
_READ_ERRORS = (pa.ArrowInvalid, OSError, pa.ArrowNotImplementedError)


@contextmanager
def _reading(path: str, failure: str) -> Iterator[None]:
    """UnreadableFile for what goes wrong inside: `failure: error` for the content, an
    `io_error` for the storage."""
    try:
        yield
    except _StorageError as exc:
        raise UnreadableFile(path, f"I/O error while reading: {exc}", io_error=True) from None
    except _READ_ERRORS as exc:
        raise UnreadableFile(path, f"{failure}: {exc}") from None


def check_readable(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """Fail early, naming the file, rather than deep inside a Ray Data task."""
    with _reading(path, f"cannot be read as {fmt}"), _open(fs, path, stream=fmt != "parquet") as f:
        schema = pq.read_schema(f) if fmt == "parquet" else pacsv.open_csv(f).schema
    return schema


def check_ingestible(fs: pafs.FileSystem, info: pafs.FileInfo, fmt: str) -> pa.Schema:
    """`check_readable`, plus what makes a readable file useless to ingest: no bytes, or (from a
    Parquet footer, so without reading the data) no rows. A batch of such files alone would
    otherwise fail the ingest on every run."""
    if info.size == 0:
        raise UnreadableFile(info.path, "empty file (0 bytes)")
    schema = check_readable(fs, info.path, fmt)
    if fmt == "parquet":
        with _reading(info.path, f"cannot be read as {fmt}"), _open(fs, info.path) as f:
            rows = pq.read_metadata(f).num_rows
        if rows == 0:
            raise UnreadableFile(info.path, "no rows")
    return schema


def check_parses(fs: pafs.FileSystem, path: str, fmt: str) -> int:
    """Read the whole file, one record batch at a time (memory: one batch), and return its rows.

    The footer or the first CSV block can be fine while a page or a line further on is not;
    only a full read finds that. The ingest step does this only after reading the batch on
    Ray failed, to find which files to blame."""
    with _reading(path, f"cannot be parsed as {fmt}"), _open(fs, path, stream=fmt != "parquet") as f:
        batches = pq.ParquetFile(f).iter_batches() if fmt == "parquet" else pacsv.open_csv(f)
        rows = sum(b.num_rows for b in batches)
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


def batch_files(path: str, fmt: str, field: str = "source.path") -> tuple[pafs.FileSystem, list[str]]:
    """The readable, non-empty batch files at `path`; a clear error for anything else."""
    fs, root = storage.resolve(path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[fmt])
    except FileNotFoundError:
        raise InputError(f"{field} {path!r}: no such file or folder") from None
    if not files:
        raise InputError(f"{field} {path!r}: no .{fmt} files")
    # One batch is one table: a column may not change type from file to file in a way Arrow
    # cannot unify (the reader would fail later, and less clearly).
    _, conflicts = split_consistent({f.path: check_readable(fs, f.path, fmt) for f in files})
    for bad, reason in conflicts.items():
        raise InputError(f"{field} {path!r}: file {bad}: {reason}")
    paths = [f.path for f in files]
    if fmt == "parquet" and pads.dataset(paths, format="parquet", filesystem=fs).count_rows() == 0:
        raise InputError(f"{field} {path!r}: the batch has no rows")
    return fs, paths


def snapshot_hash(file_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()
