"""The batch a dry-run runs on: a sample of the source's newest file (or of a file the user
names), copied into the scratch home, so the scratch pipeline never reads the production
source folder itself (its ingest would list files production has not ingested yet).

The sample keeps the file's own format and bytes per row where it can: a Parquet file is
sampled as a table (types kept); a CSV file line by line (the exact text the production ingest
would parse, quoting and timestamp formats included), unless a quote could hide a line break
inside a value, in which case the whole file is copied rather than cut mid-record.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel

from mlplatform import storage
from mlplatform.data.ingest import SUFFIXES
from mlplatform.errors import InputError
from mlplatform.spec import SourceSpec

SEED = 0  # the same batch and size give the same sample: two dry-runs of one change compare


class Sample(BaseModel):
    """What the dry-run ran on, reported with its outcome."""

    batch: str
    batch_rows: int
    rows: int
    path: str


def newest_batch(source: SourceSpec, batch: str | None = None) -> str:
    """`batch` if given (a file of the source's format), else the newest file under
    `source.path` (by modification time, then name): what production would ingest next, or
    ingested last."""
    suffixes = SUFFIXES[source.format]
    if batch is not None:
        fs, path = storage.resolve(batch)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise InputError(f"--batch {batch}: no such file")
        if not info.base_name.endswith(suffixes):
            raise InputError(f"--batch {batch}: not a {source.format} file (source.format is "
                             f"{source.format}: {', '.join(suffixes)})")
        return batch
    fs, root = storage.resolve(source.path)
    try:
        files = storage.list_files(fs, root, suffixes)
    except FileNotFoundError:
        raise InputError(f"source.path {source.path!r}: no such file or folder") from None
    if not files:
        raise InputError(f"source.path {source.path!r}: no {source.format} file to sample; "
                         "name one with --batch")
    newest = max(files, key=lambda f: (f.mtime_ns or 0, f.path))
    return newest.path if "://" not in source.path else _uri_of(source.path, root, newest.path)


def _uri_of(source_uri: str, root: str, path: str) -> str:
    """The URI of a file listed under `root`, in the source URI's scheme and options."""
    base, _, query = source_uri.partition("?")
    rel = path[len(root):].lstrip("/")
    return storage.join(base, rel) + (f"?{query}" if query else "")


def write_sample(source: SourceSpec, batch: str, rows: int, folder: Path) -> Sample:
    """Up to `rows` rows of `batch`, spread over it (seeded), written into `folder`."""
    if rows < 1:
        raise InputError(f"--sample {rows}: must be at least 1 row")
    folder.mkdir(parents=True, exist_ok=True)
    fs, path = storage.resolve(batch)
    name = path.rsplit("/", 1)[-1]
    try:
        if source.format == "parquet":
            table = pq.read_table(path, filesystem=fs)
            keep = _rows(table.num_rows, rows)
            out = folder / name
            pq.write_table(table.take(keep) if keep is not None else table, out)
            return Sample(batch=storage.redact(batch), batch_rows=table.num_rows,
                          rows=len(keep) if keep is not None else table.num_rows, path=str(out))
        with fs.open_input_stream(path) as src:
            data = src.read()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"batch {storage.redact(batch)}: cannot be read as {source.format}: {exc}") from None
    if name.endswith(".gz"):
        data, name = gzip.decompress(data), name.removesuffix(".gz")
    lines = data.splitlines(keepends=True)
    header, body = lines[:1], lines[1:]
    keep = None if b'"' in data else _rows(len(body), rows)
    out = folder / name
    out.write_bytes(b"".join(header + ([body[i] for i in keep] if keep is not None else body)))
    return Sample(batch=storage.redact(batch), batch_rows=len(body),
                  rows=len(keep) if keep is not None else len(body), path=str(out))


def _rows(total: int, wanted: int) -> list[int] | None:
    """Sorted row numbers of a seeded sample (None: all of them). Sorted, so the sample keeps
    the batch's own order (a time-ordered batch stays time-ordered)."""
    if total <= wanted:
        return None
    return sorted(np.random.default_rng(SEED).choice(total, size=wanted, replace=False).tolist())
