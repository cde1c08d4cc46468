"""`platformctl dry-run SPEC`: the whole pipeline on a sample, in a scratch home
(mlplatform.dryrun.run), production untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.cli.output import (
    JsonOpt,
    console,
    err_console,
    fmt_duration,
    handle_errors,
    print_json,
    settings_for,
)
from mlplatform.spec_code import load_checked

DEFAULT_SAMPLE = 2000


@handle_errors
def dry_run(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    sample: Annotated[int, typer.Option("--sample", min=1,
                                        help="Rows sampled from the batch.")] = DEFAULT_SAMPLE,
    batch: Annotated[str | None, typer.Option("--batch", help="The batch file to sample (default: the "
                                              "newest file under source.path).", show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch home to look at "
                                       "afterwards.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No step log lines, only the "
                                        "outcome.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Run SPEC's whole pipeline (ingest to the rollout's infra validation in a Serve replica)
    on a sample of the newest batch, in a scratch home with its own stores and Ray cluster:
    production's metadata, registry, stores and served models are only read, never written.
    Exit 0: every step passed; 1: a step failed (its own error is shown); 2: an invalid spec
    or code."""
    from mlplatform.dryrun.run import dry_run as run

    settings = settings_for()
    loaded = load_checked(spec, settings)  # a transformation that does not import: exit 2

    def log(line: str) -> None:
        if not quiet:
            err_console.print(line, style="dim", highlight=False, markup=False, soft_wrap=True)

    report = run(loaded, spec.parent, settings, sample_rows=sample, batch=batch, keep=keep, log=log)
    if json_:
        print_json(report)
    else:
        table = Table("step", "status", "time", "message")
        for s in report.steps:
            table.add_row(s.step, s.status, fmt_duration(s.duration_s), s.message[:120])
        console.print(table)
        cluster = f"scratch cluster {report.cluster_s:.1f}s" if report.cluster_s else "no cluster needed"
        console.print(f"sample: {report.sample.rows} of {report.sample.batch_rows} rows of "
                      f"{report.sample.batch}; schema: {report.schema_from}; {cluster}; "
                      f"total {report.seconds:.1f}s", highlight=False)
        if report.scratch:
            console.print(f"scratch home kept: {report.scratch}", highlight=False)
        if report.status == "SUCCEEDED":
            console.print(f"[green]dry-run passed[/]: {report.message}", highlight=False)
        else:
            where = f"at {report.failed_step}" if report.failed_step else "before the steps ran"
            err_console.print(f"[bold red]dry-run failed {where}:[/] {report.message}", highlight=False,
                              soft_wrap=True)
    sys.stdout.flush()
    if report.status != "SUCCEEDED":
        raise typer.Exit(1)
