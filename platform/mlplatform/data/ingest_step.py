"""The `ingest` step: pick up new batch files, snapshot them, record them.

A batch file is identified by its content hash, not its name or mtime: a file
copied again or touched is not new, a file rewritten in place is. New files are
read as one Ray Dataset and written under the storage URI in a content-addressed
folder (the snapshot's hash names it), so re-ingesting the same content is a no-op
and every later step reads an immutable copy.

A bad file is set aside, not a wall (`source.on_unreadable: skip`, the default): it is
recorded as a `RejectedSourceFile` output of this step with the reason, and alerted;
the other new files are ingested and the run goes on. When every new file is bad the run
ends successfully with nothing ingestible. `on_unreadable: stop` fails the step instead,
naming the file. What "set aside" means depends on what is wrong:

- its content (empty, no rows, cannot be read or parsed): its content hash is remembered
  like an ingested file's, so later runs skip it (one log line) until its content changes;
  a fixed or replaced file is new content, tried again. A critical alert: only a person
  can fix it.
- its storage (an I/O error while hashing or reading it: an S3 503 or timeout, NFS
  trouble, a permission changed): its bytes were never judged, so nothing is remembered
  and the next run tries it again; a warning, repeated each run until it reads. Under
  `stop` the step fails with exit 1 (the operation failed, not the input).
- its column types conflict with the other new files' (the odd one out, see
  `split_consistent`): that is a verdict on this batch, not on the file (the file kept may
  be the wrong one), so nothing is remembered and the next run judges it again with that
  run's new files; a warning.

Outputs are recorded only when the step completes, so a crash and a resume set the same
files aside again: their alerts are not repeated (see `_Rejections.alert`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mlplatform import manifest, storage
from mlplatform.artifacts import RejectedSourceFile, Snapshot, SourceFile
from mlplatform.data.ingest import (
    SUFFIXES,
    UnreadableFile,
    check_ingestible,
    check_parses,
    snapshot_hash,
    split_consistent,
)
from mlplatform.errors import InputError, PlatformError
from mlplatform.monitoring.alerts import raise_alert
from mlplatform.pipeline import StepContext, StepResult, step
from mlplatform.runtime.placement import place


class _ReadFailed(Exception):
    """Reading the batch on Ray failed; which file (if any) is to blame is not known yet."""


_IO_RETRIED = " (the storage's fault, not the content's: tried again on the next run)"


class _Rejections:
    """The files this run sets aside, by the spec's policy: under `stop` the first one fails
    the step, naming it."""

    def __init__(self, ctx: StepContext):
        self.ctx = ctx
        self.files: list[RejectedSourceFile] = []

    def add(self, info: pafs.FileInfo, reason: str, *, content_hash: str | None = None,
            io_error: bool = False) -> None:
        """Set `info` aside. With `content_hash`, later runs skip it until its content changes;
        without, the next run tries it again."""
        if self.ctx.spec.source.on_unreadable == "stop":
            error = PlatformError if io_error else InputError
            raise error(f"batch file {info.path}: {reason} (source.on_unreadable: stop; `skip` "
                        "would set the file aside and ingest the others)")
        self.ctx.log(f"set aside {info.path}: {reason}")
        self.files.append(RejectedSourceFile(uri=info.path, content_hash=content_hash,
                                             size_bytes=info.size, reason=reason))

    def unreadable(self, info: pafs.FileInfo, exc: UnreadableFile, content_hash: str) -> None:
        """A file a check refused: its hash is remembered unless the storage, not the content, failed."""
        if exc.io_error:
            self.add(info, exc.reason + _IO_RETRIED, io_error=True)
        else:
            self.add(info, exc.reason, content_hash=content_hash)

    def alert(self) -> None:
        """One alert per file set aside: critical when a person has to fix or replace it, a
        warning when the next run tries it again anyway.

        Alerts are raised before the step completes (its outputs are recorded after), so a
        resume after a crash sets the same files aside again; an alert already raised is
        not repeated: for the same content (remembered: once per pipeline), or for the same
        file in this run (the others: once per run)."""
        if not self.files:
            return
        # A resume follows its crash closely, so the alerts it could repeat are among the newest.
        raised = {_alert_key(a.details.get("content_hash"), a.run_id, a.details.get("file"))
                  for a in self.ctx.metadata.alerts(self.ctx.spec.name, limit=1000)
                  if a.kind == "rejected_source_file"}
        for r in self.files:
            if _alert_key(r.content_hash, self.ctx.run_id, r.uri) in raised:
                self.ctx.log(f"{r.uri}: alerted already, not again")
                continue
            # The reason of a file not remembered already says why and that it is tried again.
            again = "" if r.content_hash is None else ("; it is not tried again until its content "
                                                       "changes (fix or replace it)")
            raise_alert(
                self.ctx.services, pipeline=self.ctx.spec.name, source="ingest", kind="rejected_source_file",
                severity="warning" if r.content_hash is None else "critical",
                message=f"source file {r.uri} set aside, not ingested: {r.reason}{again}",
                run_id=self.ctx.run_id, step="ingest", link=r.uri,
                details={"file": r.uri, "content_hash": r.content_hash, "size_bytes": r.size_bytes,
                         "reason": r.reason})


def _alert_key(content_hash: str | None, run_id: str | None, file: str | None) -> tuple[str | None, ...]:
    """What makes a rejection alert the same: its content when remembered, else its file and run."""
    return (content_hash,) if content_hash else (run_id, file)


def _set_aside_before(ctx: StepContext) -> dict[str, RejectedSourceFile]:
    """Content hashes this pipeline's completed ingests rejected: not tried again."""
    found: dict[str, RejectedSourceFile] = {}
    for _, _, art in ctx.metadata.outputs_of(RejectedSourceFile, pipeline=ctx.spec.name, step="ingest"):
        if art.content_hash:
            found.setdefault(art.content_hash, art)
    return found


def _hash_all(fs: pafs.FileSystem, files: list[pafs.FileInfo],
              rejections: _Rejections) -> dict[str, str]:
    hashes = {}
    for f in files:
        try:
            hashes[f.path] = storage.sha256_file(fs, f.path)
        except OSError as exc:
            rejections.add(f, f"I/O error while reading: {exc}{_IO_RETRIED}", io_error=True)
    return hashes


def _nothing_new(ctx: StepContext, files: list[pafs.FileInfo], skipped: int) -> StepResult:
    src = ctx.spec.source
    if not files:
        msg = f"no .{src.format} files under {src.path}"
    else:
        before = f"ingested before, or {skipped} set aside" if skipped else "ingested before"
        msg = f"nothing new to ingest: {len(files)} file(s) under {src.path}, all {before}"
    ctx.log(msg)
    return StepResult(message=msg, stop_run=True,
                      summary={"files_found": len(files), "files_new": 0, "files_set_aside_before": skipped})


class _PartNames:
    """Ray Data's file names for one write: the manifest protocol's part names (the write id
    unique per attempt, then the write task's index), so a retried task rewrites its own part
    and an earlier attempt's parts are told apart and deleted at the commit. Ray's Parquet
    sink only calls `get_filename_for_task` (ray.data.datasource.FilenameProvider), so this
    module need not import Ray."""

    def __init__(self, write_id: str):
        self.write_id = write_id

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        # Ray's own write uuid too: its append mode refuses a name without it.
        return manifest.part_name(self.write_id, f"{write_uuid}-{task_index:06d}")


def estimated_rows(fs: pafs.FileSystem, paths: list[str], fmt: str, *, skip_unreadable: bool = False) -> int:
    """The batch's rows for choosing where to read it: exact from Parquet footers; for CSV an
    upper estimate from the size (a short line is ~32 bytes), so a big file never lands here.
    With `skip_unreadable` a file whose footer does not read counts as none (the caller's reader
    then fails on it, naming it)."""
    if fmt == "parquet":
        total = 0
        for path in paths:
            try:
                with fs.open_input_file(path) as f:
                    total += pq.read_metadata(f).num_rows
            except (OSError, ValueError):
                if not skip_unreadable:
                    raise
        return total
    return sum(fs.get_file_info(p).size or 0 for p in paths) // 32


def _read_local(fs: pafs.FileSystem, paths: list[str], fmt: str) -> pa.Table:
    """The batch as one table, read in this process (what Ray Data's readers do per file: the
    same pyarrow readers with their defaults). Raises _ReadFailed when a file does not read."""
    tables = []
    try:
        for path in paths:
            if fmt == "parquet":
                with fs.open_input_file(path) as f:
                    tables.append(pq.read_table(f))
            else:
                with fs.open_input_stream(path) as f:
                    tables.append(pacsv.read_csv(f))
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowException, OSError) as exc:
        raise _ReadFailed(str(exc)) from None


def _write_snapshot_local(ctx: StepContext, fs: pafs.FileSystem, paths: list[str], snap_path: str,
                          out_fs: pafs.FileSystem, content_hash: str) -> manifest.Manifest | None:
    """`_write_snapshot` in this process: one part, committed with the same manifest protocol."""
    table = _read_local(fs, paths, ctx.spec.source.format)
    if table.num_rows == 0:
        return None
    write_id = manifest.new_write_id(ctx.run_id or "")
    part = manifest.PartSink(out_fs, snap_path, write_id).write_table(table, "000000")
    return manifest.commit(out_fs, snap_path, [part], write_id=write_id, content_hash=content_hash,
                           writer=manifest.writer_label(f"ingest {ctx.run_id}"))


def _write_snapshot(ctx: StepContext, fs: pafs.FileSystem, paths: list[str], snap_path: str,
                    out_fs: pafs.FileSystem, content_hash: str) -> manifest.Manifest | None:
    """Read the files and publish them at `snap_path`: in this process below the placement
    threshold, else as one Ray Dataset whose write tasks put their parts straight into the
    folder (on any node), then this driver commits them with a manifest. None when they hold
    no rows. Raises _ReadFailed when they cannot be read."""
    fmt = ctx.spec.source.format
    where = place(ctx.spec.execution, "ingest", estimated_rows(fs, paths, fmt),
                  setting=ctx.settings.placement)
    ctx.log(f"reading {len(paths)} file(s): {where.line()}")
    ctx.placement = where
    if where.local:
        return _write_snapshot_local(ctx, fs, paths, snap_path, out_fs, content_hash)
    ctx.services.connect_ray()
    import ray

    # Our own log lines report progress; Ray Data's would repeat every 10 s in job logs.
    ray.data.DataContext.get_current().enable_progress_bars = False
    if ctx.spec.source.format == "parquet":
        ds = ray.data.read_parquet(paths, filesystem=fs)
    else:
        ds = ray.data.read_csv(paths, filesystem=fs)
    write_id = manifest.new_write_id(ctx.run_id or "")
    try:
        ds.write_parquet(snap_path, filesystem=out_fs,
                         filename_provider=_PartNames(write_id))  # type: ignore[arg-type]
    except Exception as exc:  # Ray wraps the reader's error: find the file to blame, or name the batch
        raise _ReadFailed(str(exc)) from None  # its parts, if any, stay invisible (no manifest)
    written = manifest.parts_of(out_fs, snap_path, write_id)
    parts = [p for p in written if p.rows]
    if not parts:  # no rows: nothing to publish (empty parts are invisible; tidy them anyway)
        for p in written:
            out_fs.delete_file(f"{snap_path}/{p.name}")
        return None
    return manifest.commit(out_fs, snap_path, parts, write_id=write_id, content_hash=content_hash,
                           writer=manifest.writer_label(f"ingest {ctx.run_id}"))


def _snapshot(ctx: StepContext, fs: pafs.FileSystem, good: list[pafs.FileInfo], hashes: dict[str, str],
              columns: list[str]) -> Snapshot | None:
    """The snapshot of `good` (written now, or found: same content); None when they hold no rows."""
    snap = snapshot_hash([hashes[f.path] for f in good])
    snap_uri = storage.join(ctx.settings.storage_uri, "snapshots", ctx.spec.name, snap[:16])
    out_fs, snap_path = storage.resolve(snap_uri)
    paths = [f.path for f in good]
    found = manifest.read(out_fs, snap_path)
    if found is not None and found.content_hash == snap:
        ctx.log(f"snapshot {snap[:16]} already stored (same content): reusing it")
    else:
        found = _write_snapshot(ctx, fs, paths, snap_path, out_fs, snap)
        if found is None:
            return None
    if "://" not in ctx.settings.storage_uri:
        snap_uri = snap_path
    ctx.log(f"snapshot {snap[:16]}: {found.rows} rows, {len(columns)} columns -> {storage.redact(snap_uri)}")
    return Snapshot(uri=snap_uri, content_hash=snap, rows=found.rows, columns=columns, files=paths,
                    format="parquet")


def _ingest_good(ctx: StepContext, fs: pafs.FileSystem, good: list[pafs.FileInfo], hashes: dict[str, str],
                 columns: dict[str, list[str]], rejections: _Rejections) -> tuple[Snapshot | None,
                                                                                  list[pafs.FileInfo]]:
    """Snapshot the good files; when Ray cannot read them, read each in full to find the bad
    ones (a corrupt page past a good footer, a bad CSV line past the first block), set them
    aside and try the rest. Returns the snapshot (None: nothing left with rows) and the files
    in it."""
    fmt = ctx.spec.source.format
    while good:
        cols = sorted({c for f in good for c in columns[f.path]})
        try:
            snap = _snapshot(ctx, fs, good, hashes, cols)
        except _ReadFailed as exc:
            blamed = []
            for f in good:
                try:
                    check_parses(fs, f.path, fmt)
                except UnreadableFile as bad:
                    rejections.unreadable(f, bad, hashes[f.path])
                    blamed.append(f.path)
            if not blamed:  # each file reads in full here: the cluster failed, not the input
                raise PlatformError(f"reading batch files {', '.join(f.path for f in good)} on Ray "
                                    f"failed, though each reads in full here (a cluster or storage "
                                    f"fault, not bad input; retry the run): {exc}") from None
            good = [f for f in good if f.path not in blamed]
            continue
        if snap is None:  # CSV files with a header and no rows (Parquet ones are caught earlier)
            for f in good:
                rejections.add(f, "no rows", content_hash=hashes[f.path])
            return None, []
        return snap, good
    return None, []


@step("ingest", produces=(Snapshot, RejectedSourceFile))
def ingest(ctx: StepContext) -> StepResult:
    src = ctx.spec.source
    fs, root = storage.resolve(src.path)
    try:
        files = storage.list_files(fs, root, SUFFIXES[src.format])
    except FileNotFoundError:
        raise InputError(f"source.path {src.path!r}: no such file or folder") from None
    rejections = _Rejections(ctx)
    seen = ctx.metadata.consumed_hashes(ctx.spec.name, "ingest", SourceFile.kind)
    aside = _set_aside_before(ctx)
    hashes = _hash_all(fs, files, rejections)
    skipped = [f.path for f in files if hashes.get(f.path) in aside]
    if skipped:
        ctx.log(f"{len(skipped)} file(s) set aside by an earlier run, not tried again until their content "
                f"changes: {', '.join(skipped)}")
    known = seen | aside.keys()
    new = [f for f in files if f.path in hashes and hashes[f.path] not in known]
    if not new and not rejections.files:
        return _nothing_new(ctx, files, len(skipped))

    ctx.log(f"{len(new)} new file(s) of {len(files)} under {src.path}")
    schemas = {}
    for f in new:
        try:
            schemas[f.path] = check_ingestible(fs, f, src.format)
        except UnreadableFile as exc:
            rejections.unreadable(f, exc, hashes[f.path])
    kept, conflicts = split_consistent(schemas)
    for f in new:
        if f.path in conflicts:  # a verdict on this batch, not the file: not remembered
            rejections.add(f, f"{conflicts[f.path]} (a conflict with this run's other new files: "
                              "judged again on the next run)")
    good = [f for f in new if f.path in kept]
    snap, good = _ingest_good(ctx, fs, good, hashes, {p: s.names for p, s in schemas.items()}, rejections)
    rejections.alert()
    rejected = [{"file": r.uri, "reason": r.reason} for r in rejections.files]
    summary = {"files_found": len(files), "files_new": len(new), "files_ingested": len(good),
               "files_rejected": len(rejected), "rejected": rejected, "files_set_aside_before": len(skipped)}
    aside_note = (f"set aside {len(rejected)} file(s): "
                  + "; ".join(f"{r['file']} ({r['reason']})" for r in rejected)) if rejected else ""
    if snap is None:
        msg = f"nothing ingestible under {src.path}: {aside_note}"
        ctx.log(msg)
        return StepResult(outputs=list(rejections.files), summary=summary, message=msg, stop_run=True)
    return StepResult(
        inputs=[SourceFile(uri=f.path, content_hash=hashes[f.path], size_bytes=f.size) for f in good],
        outputs=[snap, *rejections.files],
        summary={**summary, "rows": snap.rows},
        message=f"ingested {len(good)} file(s), {snap.rows} rows{'; ' + aside_note if aside_note else ''}",
    )
