"""The `ingest` step: pick up new batch files, snapshot them, record them.

A batch file is identified by its content hash, not its name or mtime: a file
copied again or touched is not new, a file rewritten in place is. New files are
read as one Ray Dataset and written under the storage URI in a content-addressed
folder (the snapshot's hash names it), so re-ingesting the same content is a no-op
and every later step reads an immutable copy.
"""

from __future__ import annotations

import secrets

import pyarrow.dataset as pads

from mlplatform import storage
from mlplatform.artifacts import Snapshot, SourceFile
from mlplatform.data.ingest import SUFFIXES, check_consistent, check_readable, snapshot_hash
from mlplatform.errors import InputError
from mlplatform.pipeline import StepContext, StepResult, step


@step("ingest", produces=(Snapshot,))
def ingest(ctx: StepContext) -> StepResult:
    src = ctx.spec.source
    fs, root = storage.resolve(src.path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[src.format])
    except FileNotFoundError:
        raise InputError(f"source.path {src.path!r}: no such file or folder") from None
    seen = ctx.metadata.consumed_hashes(ctx.spec.name, "ingest", SourceFile.kind)
    hashes = {f.path: storage.sha256_file(fs, f.path) for f in files}
    new = [f for f in files if hashes[f.path] not in seen]
    if not new:
        msg = (f"nothing new to ingest: {len(files)} file(s) under {src.path}, "
               f"all ingested before" if files else f"no .{src.format} files under {src.path}")
        ctx.log(msg)
        return StepResult(message=msg, stop_run=True,
                          summary={"files_found": len(files), "files_new": 0})

    ctx.log(f"{len(new)} new file(s) of {len(files)} under {src.path}")
    schemas = {f.path: check_readable(fs, f.path, src.format) for f in new}
    check_consistent(schemas)
    snap = snapshot_hash([hashes[f.path] for f in new])
    out_fs, out_root = storage.resolve(ctx.settings.storage_uri)
    snap_path = f"{out_root.rstrip('/')}/snapshots/{ctx.spec.name}/{snap[:16]}"
    if storage.exists(out_fs, snap_path):
        ctx.log(f"snapshot {snap[:16]} already stored (same content): reusing it")
    else:
        ctx.services.connect_ray()
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
        inputs=[SourceFile(uri=f.path, content_hash=hashes[f.path], size_bytes=f.size) for f in new],
        outputs=[Snapshot(uri=snap_uri, content_hash=snap, rows=rows, columns=columns,
                          files=[f.path for f in new], format="parquet")],
        summary={"files_found": len(files), "files_new": len(new), "rows": rows},
        message=f"ingested {len(new)} file(s), {rows} rows",
    )
