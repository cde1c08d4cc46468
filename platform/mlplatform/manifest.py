"""One commit protocol for every folder of parts the platform publishes (snapshots,
validated batches, quarantine, training sets): parts first, then a manifest.

    <folder>/part-<write id>-<key>.parquet   written straight to the folder, by whoever
                                             holds the rows (a Ray task on any node)
    <folder>/_manifest.json                  written last, by the driver: the commit

Why: an object store cannot rename a folder (the old tmp-folder-then-move publish
fails on S3), and Ray tasks on other nodes cannot write to the driver's disk. So parts
go to their final folder under unique names (the write id: one per attempt), invisible
until a manifest names them; the manifest is one small object whose PUT is atomic on S3
(locally: a temporary file renamed over it, `storage.publish_file`). Readers see a write
only through its manifest (`committed_files`): a folder without one is absent, so a crash
between the parts and the manifest leaves nothing visible, and a retry under a new write
id never adds rows twice. Superseding a write is committing a new manifest, then deleting
the parts it does not name.

One writer per folder at a time (the pipeline runs a step once at a time): a commit checks
that its parts are all still there before it deletes anything, so two writers racing on one
folder fail loudly rather than publish a manifest whose parts were deleted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import secrets
import socket
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from mlplatform import storage
from mlplatform.errors import PlatformError

MANIFEST = "_manifest.json"  # '_': pyarrow and Ray Data skip it when they scan a folder
PART_PREFIX = "part-"
_ID = re.compile(r"[A-Za-z0-9_.-]+")


class NotCommitted(PlatformError, FileNotFoundError):
    """A folder that holds no committed write: never written, or its write did not finish.
    A FileNotFoundError too, so readers that skip missing data skip it alike."""


class PartFile(BaseModel):
    name: str = Field(description="File name inside the folder.")
    rows: int = Field(description="Rows in the file (from its Parquet footer).")
    size_bytes: int | None = None
    sha256: str | None = Field(None, description="Of the file's bytes, when the writer knew it.")


class Manifest(BaseModel):
    """A committed write: exactly these files, nothing else in the folder."""

    write_id: str
    writer: str = Field(description="What wrote it (step, run, host).")
    created_at: dt.datetime
    rows: int
    content_hash: str = Field(description="The content's identity: given by the writer (e.g. the "
                                          "snapshot's source hash), else a hash of the parts.")
    files: list[PartFile]


def new_write_id(hint: str = "") -> str:
    """A write id unique per attempt: time first (sortable), then randomness."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", hint)[:40]
    return "-".join(p for p in (stamp, label, secrets.token_hex(4)) if p)


def part_name(write_id: str, key: str, ext: str = "parquet") -> str:
    return f"{PART_PREFIX}{write_id}-{key}.{ext}"


def writer_label(what: str) -> str:
    return f"{what}@{socket.gethostname()}"


@dataclass(frozen=True)
class PartSink:
    """Where one write's parts go; picklable, so Ray tasks on any node write through it
    (the filesystem carries its endpoint and credentials, see mlplatform.storage)."""

    fs: pafs.FileSystem
    folder: str
    write_id: str

    def write_table(self, table: pa.Table, key: str) -> PartFile:
        """Write one part (a retried task with the same key overwrites its own part)."""
        if not _ID.fullmatch(key):
            raise ValueError(f"part key {key!r}: letters, digits, '.', '_', '-' only")
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        name = part_name(self.write_id, key)
        storage.ensure_dir(self.fs, self.folder)
        with self.fs.open_output_stream(f"{self.folder}/{name}") as out:
            out.write(data)
        return PartFile(name=name, rows=table.num_rows, size_bytes=len(data),
                        sha256=hashlib.sha256(data).hexdigest())


def sink(uri: str, write_id: str) -> PartSink:
    fs, folder = storage.resolve(uri)
    return PartSink(fs, folder, write_id)


def parts_of(fs: pafs.FileSystem, folder: str, write_id: str) -> list[PartFile]:
    """The parts a write left in `folder` (for writers that cannot report them, such as Ray
    Data's write_parquet), described from their Parquet footers."""
    prefix = f"{PART_PREFIX}{write_id}-"
    if not storage.exists(fs, folder):
        return []
    found = []
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        if info.type == pafs.FileType.File and info.base_name.startswith(prefix):
            with fs.open_input_file(info.path) as f:
                rows = pq.ParquetFile(f).metadata.num_rows
            found.append(PartFile(name=info.base_name, rows=rows, size_bytes=info.size))
    return sorted(found, key=lambda p: p.name)


def commit(fs: pafs.FileSystem, folder: str, parts: list[PartFile], *, write_id: str, writer: str,
           content_hash: str | None = None) -> Manifest:
    """Publish `parts` as the folder's one committed write, then delete any other part
    (an earlier write it supersedes, the leftovers of a crashed attempt)."""
    names = {p.name for p in parts}
    if len(names) != len(parts):
        raise ValueError(f"{folder}: the same part listed twice")
    storage.ensure_dir(fs, folder)
    present = {i.base_name for i in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
               if i.type == pafs.FileType.File}
    lost = sorted(names - present)
    if lost:
        raise PlatformError(f"cannot commit write {write_id} to {folder}: part(s) {lost[:3]} are gone "
                            "(another writer superseded this folder meanwhile?)")
    manifest = Manifest(write_id=write_id, writer=writer, created_at=dt.datetime.now(dt.UTC),
                        rows=sum(p.rows for p in parts), content_hash=content_hash or _hash(parts),
                        files=sorted(parts, key=lambda p: p.name))
    storage.put_bytes(fs, f"{folder}/{MANIFEST}", manifest.model_dump_json(indent=1).encode())
    for name in sorted(present - names):
        if name.startswith(PART_PREFIX):
            fs.delete_file(f"{folder}/{name}")
    return manifest


def _hash(parts: list[PartFile]) -> str:
    lines = sorted(p.sha256 or f"{p.name}:{p.size_bytes}:{p.rows}" for p in parts)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def read(fs: pafs.FileSystem, folder: str) -> Manifest | None:
    """The folder's committed write, or None when nothing is committed there."""
    try:
        with fs.open_input_stream(f"{folder}/{MANIFEST}") as src:
            return Manifest.model_validate_json(src.read())
    except FileNotFoundError:
        return None


def committed(uri: str) -> tuple[pafs.FileSystem, Manifest]:
    """The committed write at `uri`; NotCommitted when there is none."""
    fs, folder = storage.resolve(uri)
    found = read(fs, folder)
    if found is None:
        raise NotCommitted(f"nothing committed at {storage.redact(uri)}: no {MANIFEST} (never written, "
                           "or its write did not finish)")
    return fs, found


def committed_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """(filesystem, paths) of the files of the committed write at `uri`: what a reader reads,
    never a listing of the folder. NotCommitted when there is none."""
    fs, found = committed(uri)
    folder = storage.resolve(uri)[1]
    return fs, [f"{folder}/{p.name}" for p in found.files]


def remove(fs: pafs.FileSystem, folder: str) -> None:
    """Withdraw the folder's write: the manifest first (readers stop seeing it at once),
    then the parts."""
    if not storage.exists(fs, folder):
        return
    if storage.exists(fs, f"{folder}/{MANIFEST}"):
        fs.delete_file(f"{folder}/{MANIFEST}")
    fs.delete_dir(folder)
