"""`platformctl submit` and `platformctl jobs list | status | logs | stop`."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.cli.output import (
    AddressOpt,
    JsonOpt,
    console,
    err_console,
    fmt_duration,
    handle_errors,
    print_json,
    settings_for,
)
from mlplatform.errors import InputError, PlatformError
from mlplatform.run_ids import new_run_id
from mlplatform.runtime.jobs import JobInfo, JobsClient, Submission, submit_pipeline
from mlplatform.settings import Settings
from mlplatform.spec_code import load_checked

app = typer.Typer(help="Ray Jobs on the cluster.", no_args_is_help=True)


def submit_and_watch(settings: Settings, spec_file: Path, *, steps: list[str] | None,
                     run_id: str | None, wait: bool, follow: bool, json_: bool,
                     working_dir: Path | None = None,
                     quiet: bool = False) -> tuple[Submission, JobInfo | None]:
    """Validate the spec here, submit it, and optionally wait for or follow the job."""
    spec = load_checked(spec_file, settings)  # before any cluster work
    run_id = run_id or new_run_id(spec.name)
    sub = submit_pipeline(settings, spec_file, run_id=run_id, pipeline=spec.name, steps=steps,
                          working_dir=working_dir)
    if not json_:
        console.print(f"submitted job [bold]{sub.job_id}[/] (run {sub.run_id})")
        console.print(f"  dashboard: {sub.dashboard_url}/#/jobs/{sub.job_id}")
    info: JobInfo | None = None
    if follow or wait:
        client = JobsClient(settings)
        if follow and (not json_ or quiet):
            info = client.follow(sub.job_id, write=lambda s: (sys.stdout.write(s),
                                                                sys.stdout.flush()))
        else:
            with console.status(f"job {sub.job_id} running...") if not json_ or quiet else nullcontext():
                info = client.wait(sub.job_id)
    return sub, info


@handle_errors
def submit(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    step: Annotated[list[str] | None, typer.Option("--step", help="Run only this step "
                    "(repeatable).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's logs.")] = False,
    run_id: Annotated[str | None, typer.Option(help="Resume this run instead of a new one.")] = None,
    working_dir: Annotated[Path | None, typer.Option(help="Uploaded with the job "
                           "(default: the current folder).")] = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Submit a pipeline run as a Ray Job; prints the job id."""
    if wait and follow:
        raise InputError("--wait and --follow: choose one")
    settings = settings_for(address)
    sub, info = submit_and_watch(settings, spec, steps=step, run_id=run_id, wait=wait,
                                 follow=follow, json_=json_, working_dir=working_dir)
    report_submission(sub, info, json_)


def report_submission(sub: Submission, info: JobInfo | None, json_: bool) -> None:
    """The end of `submit` and `runs retry`: the outcome, and exit 1 unless it SUCCEEDED."""
    if json_:
        print_json({**sub.model_dump(mode="json"),
                    "job": info.model_dump(mode="json") if info else None})
    elif info is not None:
        print_outcome(info)
    if info is not None and info.status != "SUCCEEDED":
        raise typer.Exit(1)


def print_outcome(info: JobInfo) -> None:
    colour = "green" if info.status == "SUCCEEDED" else "red"
    console.print(f"job {info.job_id} [bold {colour}]{info.status}[/] "
                  f"in {fmt_duration(info.duration_s)}")
    if info.status != "SUCCEEDED" and info.message:
        err_console.print(f"reason: {_reason(info)}", highlight=False)


def _reason(info: JobInfo) -> str:
    """The job's own last error line, not Ray's 20,000-character log excerpt."""
    lines = [ln for ln in (info.message or "").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("error:", "run ")) or "FAILED" in ln or "Error" in ln:
            return ln.strip()
    return lines[-1] if lines else (info.message or "")


@app.command("list")
@handle_errors
def list_(address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """Jobs on the cluster, newest first."""
    jobs = JobsClient(settings_for(address)).list()
    if json_:
        print_json(jobs)
        return
    table = Table("job id", "status", "started", "duration", "pipeline", "run")
    for j in jobs:
        table.add_row(j.job_id, j.status, j.start_time.strftime("%Y-%m-%d %H:%M:%S")
                      if j.start_time else "-", fmt_duration(j.duration_s),
                      j.metadata.get("pipeline", ""), j.metadata.get("run_id", ""))
    console.print(table)


@app.command("status")
@handle_errors
def status(job_id: str, address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """One job's status; for a failed job, the reason."""
    info = JobsClient(settings_for(address)).status(job_id)
    if json_:
        print_json(info)
        return
    console.print(f"{info.job_id}: [bold]{info.status}[/]  ({fmt_duration(info.duration_s)})")
    console.print(f"  entrypoint: {info.entrypoint}", highlight=False)
    if info.status in ("FAILED", "STOPPED"):
        console.print(f"  reason: {_reason(info)}", highlight=False)


@app.command("logs")
@handle_errors
def logs(job_id: str, follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
         address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """A job's logs (driver output); --follow streams them until the job ends."""
    client = JobsClient(settings_for(address))
    if follow and not json_:
        client.follow(job_id, write=lambda s: (sys.stdout.write(s), sys.stdout.flush()))
        return
    text = client.logs(job_id)
    if json_:
        print_json({"job_id": job_id, "logs": text})
    else:
        sys.stdout.write(text)


@app.command("stop")
@handle_errors
def stop(job_id: str, address: AddressOpt = None, json_: JsonOpt = False) -> None:
    """Stop a running job."""
    client = JobsClient(settings_for(address))
    stopped = client.stop(job_id)
    if json_:
        print_json({"job_id": job_id, "stop_requested": stopped})
    elif stopped:
        console.print(f"stop requested for {job_id}")
    else:
        raise PlatformError(f"job {job_id} was not running ({client.status(job_id).status})")
