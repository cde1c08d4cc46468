"""The `ingest` step: pick up new batch files, snapshot them, record them.

A batch file is identified by its content hash, not its name or mtime: a file
copied again or touched is not new, a file rewritten in place is. New files are
read as one Ray Dataset and written under the storage URI in a content-addressed
folder (the snapshot's hash names it), so re-ingesting the same content is a no-op
and every later step reads an immutable copy.
"""

from __future__ import annotations

import hashlib
import secrets

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform import storage
from mlplatform.cluster import ensure_ray
from mlplatform.errors import InputError
from mlplatform.pipeline import ArtifactOut, StepContext, StepResult, step

SUFFIXES = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}
SOURCE_KIND = "source_file"
SNAPSHOT_KIND = "dataset_snapshot"


def _check_readable(fs: pafs.FileSystem, path: str, fmt: str) -> pa.Schema:
    """Fail early, naming the file, rather than deep inside a Ray Data task."""
    try:
        if fmt == "parquet":
            return pq.read_schema(path, filesystem=fs)
        with fs.open_input_stream(path, compression="detect") as stream:
            reader = pacsv.open_csv(stream)
            return reader.schema
    except (pa.ArrowInvalid, OSError, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"batch file {path}: cannot be read as {fmt}: {exc}") from None


def _check_consistent(schemas: dict[str, pa.Schema]) -> None:
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
    _check_consistent({f.path: _check_readable(fs, f.path, fmt) for f in files})
    paths = [f.path for f in files]
    if fmt == "parquet" and pads.dataset(paths, format="parquet", filesystem=fs).count_rows() == 0:
        raise InputError(f"{field} {path!r}: the batch has no rows")
    return fs, paths


def snapshot_hash(file_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()


@step("ingest")
def ingest(ctx: StepContext) -> StepResult:
    src = ctx.spec.source
    fs, root = storage.resolve(src.path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[src.format])
    except FileNotFoundError:
        raise InputError(f"source.path {src.path!r}: no such file or folder") from None
    seen = ctx.store.consumed_hashes(ctx.spec.name, "ingest", SOURCE_KIND)
    hashes = {f.path: storage.sha256_file(fs, f.path) for f in files}
    new = [f for f in files if hashes[f.path] not in seen]
    if not new:
        msg = (f"nothing new to ingest: {len(files)} file(s) under {src.path}, "
               f"all ingested before" if files else f"no .{src.format} files under {src.path}")
        ctx.log(msg)
        return StepResult(message=msg, stop_run=True,
                          summary={"files_found": len(files), "files_new": 0})

    ctx.log(f"{len(new)} new file(s) of {len(files)} under {src.path}")
    schemas = {f.path: _check_readable(fs, f.path, src.format) for f in new}
    _check_consistent(schemas)
    snap = snapshot_hash([hashes[f.path] for f in new])
    out_fs, out_root = storage.resolve(ctx.settings.storage_uri)
    snap_path = f"{out_root.rstrip('/')}/snapshots/{ctx.spec.name}/{snap[:16]}"
    if storage.exists(out_fs, snap_path):
        ctx.log(f"snapshot {snap[:16]} already stored (same content): reusing it")
    else:
        ensure_ray()
        import ray

        # Our own log lines report progress; Ray Data's would repeat every 10 s in job logs.
        ray.data.DataContext.get_current().enable_progress_bars = False
        paths = [f.path for f in new]
        if src.format == "parquet":
            ds = ray.data.read_parquet(paths, filesystem=fs)
        else:
            ds = ray.data.read_csv(paths, filesystem=fs)
        tmp = f"{snap_path}.tmp-{secrets.token_hex(4)}"
        try:
            ds.write_parquet(tmp, filesystem=out_fs)
        except Exception as exc:  # Ray wraps the reader's error; name the batch
            raise InputError(f"batch files {', '.join(paths)}: ingest failed: {exc}") from None
        if not storage.exists(out_fs, tmp):
            raise InputError(f"batch files {', '.join(paths)}: no rows to ingest")
        # Publish atomically: a crash leaves only a .tmp folder, never a half snapshot.
        out_fs.move(tmp, snap_path)
    rows = pads.dataset(snap_path, format="parquet", filesystem=out_fs).count_rows()
    columns = sorted({name for s in schemas.values() for name in s.names})
    snap_uri = snap_path if "://" not in ctx.settings.storage_uri else storage.join(
        ctx.settings.storage_uri, "snapshots", ctx.spec.name, snap[:16])
    ctx.log(f"snapshot {snap[:16]}: {rows} rows, {len(columns)} columns -> {snap_uri}")
    return StepResult(
        inputs=[ArtifactOut(uri=f.path, kind=SOURCE_KIND, content_hash=hashes[f.path],
                            properties={"size_bytes": f.size}) for f in new],
        outputs=[ArtifactOut(uri=snap_uri, kind=SNAPSHOT_KIND, content_hash=snap,
                             properties={"rows": rows, "columns": columns,
                                         "files": [f.path for f in new],
                                         "format": "parquet"})],
        summary={"files_found": len(files), "files_new": len(new), "rows": rows},
        message=f"ingested {len(new)} file(s), {rows} rows",
    )
