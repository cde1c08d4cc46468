"""`platformctl runs list | show | lineage`: what the metadata store recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.artifacts import RejectedSourceFile
from mlplatform.cli.output import (
    AddressOpt,
    JsonOpt,
    console,
    fmt_duration,
    handle_errors,
    print_json,
    services_for,
    settings_for,
)
from mlplatform.errors import InputError
from mlplatform.metadata.store import MetadataStore, RunDetail
from mlplatform.services import Services

app = typer.Typer(help="Pipeline runs, their steps and artifacts.", no_args_is_help=True)


def _store() -> MetadataStore:
    return services_for().metadata


def rejected_files(detail: RunDetail) -> list[RejectedSourceFile]:
    """The source files this run's ingest set aside, each with its reason."""
    return [MetadataStore.typed(RejectedSourceFile, e.artifact, f"run {detail.run_id}:")
            for e in detail.artifacts if e.type == "OUTPUT" and e.artifact.kind == RejectedSourceFile.kind]


@app.command("list")
@handle_errors
def list_(pipeline: Annotated[str, typer.Argument(help="Pipeline name.")],
          json_: JsonOpt = False) -> None:
    """Runs of a pipeline, newest first."""
    store = _store()
    runs = store.runs(pipeline)
    if not runs and pipeline not in store.pipelines():
        known = ", ".join(store.pipelines()) or "none yet"
        raise InputError(f"pipeline {pipeline!r} has no runs (pipelines: {known})")
    if json_:
        print_json(runs)
        return
    table = Table("run", "status", "created", "job", "message")
    for r in runs:
        colour = {"SUCCEEDED": "green", "FAILED": "red"}.get(r.status, "yellow")
        table.add_row(r.run_id, f"[{colour}]{r.status}[/]", r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                      r.job_id or "-", r.message)
    console.print(table)


@app.command("show")
@handle_errors
def show(run_id: Annotated[str, typer.Argument(help="Run id.")], json_: JsonOpt = False) -> None:
    """A run's steps with durations, and the artifacts each read and wrote."""
    detail = _store().run(run_id)
    if detail is None:
        raise InputError(f"run {run_id!r} not found")
    rejected = rejected_files(detail)
    if json_:
        print_json({**detail.model_dump(mode="json", by_alias=True),
                    "rejected_files": [{"file": r.uri, "reason": r.reason, "content_hash": r.content_hash,
                                        "size_bytes": r.size_bytes} for r in rejected]})
        return
    console.print(f"run [bold]{detail.run_id}[/] of {detail.pipeline}: [bold]{detail.status}[/]"
                  f"  {detail.message}", highlight=False)
    steps = Table("step", "status", "started", "duration", "host", "summary / error")
    for e in detail.steps:
        note = (e.error or "").strip().splitlines()[-1:] or [e.summary.get("message", "")]
        steps.add_row(e.step, e.status, e.started_at.strftime("%H:%M:%S"),
                      fmt_duration(e.duration_s), e.host, note[0])
    console.print(steps)
    if detail.artifacts:
        arts = Table("id", "step", "dir", "kind", "hash", "uri")
        for ev in detail.artifacts:
            a = ev.artifact
            arts.add_row(str(a.id), ev.step, ev.type.lower(), a.kind, (a.content_hash or "-")[:16],
                         a.uri)
        console.print(arts)
    if rejected:
        table = Table("rejected source file", "bytes", "reason", title="set aside, not ingested")
        for r in rejected:
            table.add_row(r.uri, str(r.size_bytes if r.size_bytes is not None else "-"), r.reason)
        console.print(table)


@app.command("lineage")
@handle_errors
def lineage(artifact_id: int,
            downstream: Annotated[bool, typer.Option(help="What was made from it.")] = False,
            json_: JsonOpt = False) -> None:
    """Where an artifact came from (upstream) or what was made from it (--downstream)."""
    store = _store()
    art = store.artifact(artifact_id)
    if art is None:
        raise InputError(f"artifact {artifact_id} not found")
    nodes = store.lineage(artifact_id, "downstream" if downstream else "upstream")
    if json_:
        print_json({"artifact": art.model_dump(mode="json"),
                    "lineage": [n.model_dump(mode="json") for n in nodes]})
        return
    console.print(f"{art.kind} {art.id}: {art.uri} ({(art.content_hash or '-')[:16]})")
    for n in nodes:
        console.print(f"{'  ' * n.depth}{'<-' if not downstream else '->'} [{n.via}] "
                      f"{n.artifact.kind} {n.artifact.id}: {n.artifact.uri} "
                      f"({(n.artifact.content_hash or '-')[:16]})", highlight=False)


@app.command("retry")
@handle_errors
def retry(run_id: Annotated[str, typer.Argument(help="A FAILED run.")],
          wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
          follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's logs.")] = False,
          address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """Re-run a failed run after fixing its data or schema: it resumes at the failed step,
    with the spec file as it is now."""
    from mlplatform.cli.jobs_cmd import report_submission, submit_and_watch

    settings = settings_for(address)
    detail = Services(settings).metadata.run(run_id)
    if detail is None:
        raise InputError(f"run {run_id!r} not found")
    if detail.status == "SUCCEEDED":
        raise InputError(f"run {run_id} SUCCEEDED: nothing to retry")
    spec_file = detail.spec_file
    if not spec_file or not Path(spec_file).is_file():
        raise InputError(f"run {run_id}: its spec file {spec_file!r} is not here any more")
    sub, info = submit_and_watch(settings, Path(spec_file), steps=None, run_id=run_id, wait=wait,
                                 follow=follow, json_=json_, working_dir=Path(spec_file).parent)
    report_submission(sub, info, json_)
