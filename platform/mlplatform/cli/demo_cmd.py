"""`platformctl demo-data` and `platformctl demo`: the whole loop on the embedded default."""

from __future__ import annotations

import datetime as dt
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlplatform import cluster
from mlplatform.cli.jobs_cmd import submit_and_watch
from mlplatform.cli.output import (
    JsonOpt,
    console,
    fmt_duration,
    handle_errors,
    print_json,
    settings_for,
)
from mlplatform.data.synthetic import DayFile, DemoDataConfig, write_demo_data
from mlplatform.errors import InputError, PlatformError
from mlplatform.jobs_client import package_dir
from mlplatform.registry.metadata import MetadataStore


def _config(**kwargs: object) -> DemoDataConfig:
    try:
        return DemoDataConfig.model_validate({k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as exc:
        e = exc.errors()[0]
        flag = "--" + str(e["loc"][0]).replace("_", "-")
        raise InputError(f"{flag} {e.get('input')!r}: {e['msg']}") from None


def write_with_progress(out: Path, cfg: DemoDataConfig, quiet: bool) -> list[DayFile]:
    with Progress(TextColumn("demo data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("days", total=cfg.days)
        return write_demo_data(out, cfg, on_day=lambda _: bar.advance(task))


@handle_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write one Parquet file per day into.")],
    days: Annotated[int, typer.Option(help="Number of days.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Events per day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    drift_day: Annotated[int | None, typer.Option(help="Day from which features and the "
                         "label relation drift.")] = None,
    break_day: Annotated[int | None, typer.Option(help="Day written with schema breaks.")] = None,
    entities: Annotated[int, typer.Option(help="Distinct customers.")] = 5000,
    start: Annotated[str, typer.Option(help="Date of day 1 (YYYY-MM-DD).")] = "2026-01-01",
    json_: JsonOpt = False,
) -> None:
    """Write a realistic synthetic event stream (customers, 10 numeric and 3 categorical
    features with missing values, a noisy churn label)."""
    try:
        start_date = dt.date.fromisoformat(start)
    except ValueError:
        raise InputError(f"--start {start!r}: expected a date YYYY-MM-DD") from None
    cfg = _config(days=days, rows_per_day=rows_per_day, seed=seed, drift_day=drift_day,
                  break_day=break_day, entities=entities, start=start_date)
    files = write_with_progress(out, cfg, quiet=json_)
    if json_:
        print_json(files)
        return
    for f in files:
        tags = " ".join(t for t, on in (("drifted", f.drifted), ("BROKEN", f.broken)) if on)
        console.print(f"day {f.day:>3} {f.date} {f.rows:>8} rows  {f.path} {tags}", highlight=False)


@handle_errors
def demo(
    days: Annotated[int, typer.Option(help="Days of demo data.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Events per day.")] = 2000,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local cluster.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Bring up the local cluster, write demo data, run the demo pipeline as a Ray Job."""
    settings = settings_for()
    say = (lambda *_: None) if json_ else console.print
    say("[bold]1/4[/] local Ray cluster")
    with console.status("starting Ray (about 15 s)...") if not json_ else nullcontext():
        started = cluster.up(settings, num_cpus=num_cpus)
    say(f"    {started.message}")
    settings = settings_for()
    data_dir = settings.home / "demo" / "data"
    say(f"[bold]2/4[/] demo data -> {data_dir}")
    files = write_with_progress(data_dir, _config(days=days, rows_per_day=rows_per_day),
                                quiet=json_)
    say(f"    {len(files)} day(s), {sum(f.rows for f in files)} events")
    spec = package_dir("jobs") / "examples" / "demo.yaml"
    say(f"[bold]3/4[/] submitting {spec} as a Ray Job (logs follow)")
    sub, info = submit_and_watch(settings, spec, steps=None, run_id=None, wait=json_,
                                 follow=not json_, json_=json_, working_dir=spec.parent)
    assert info is not None
    detail = MetadataStore(settings.metadata_url).run(sub.run_id)
    if json_:
        print_json({"cluster": started.state.model_dump(mode="json"), "job_id": sub.job_id,
                    "job_status": info.status, "run": detail.model_dump(mode="json")
                    if detail else None})
    else:
        say(f"[bold]4/4[/] job {sub.job_id}: [bold]{info.status}[/]")
        if detail:
            say(f"    run {detail.run_id}: {detail.status} - {detail.properties.get('message', '')}")
            for e in detail.steps:
                say(f"    step {e.step:<12} {e.status:<9} {fmt_duration(e.duration_s)}")
            for ev in detail.artifacts:
                if ev.type == "OUTPUT":
                    say(f"    {ev.artifact.kind} {ev.artifact.uri} "
                        f"(sha256 {ev.artifact.content_hash[:16] if ev.artifact.content_hash else '-'})")
        say("\nWhere to look:")
        say(f"  Ray dashboard      {started.state.dashboard_url}  (token: {settings.auth_token_path})")
        say(f"  this run           platformctl runs show {sub.run_id}")
        say(f"  the job's logs     platformctl jobs logs {sub.job_id}")
        say("  all runs           platformctl runs list demo")
        say("  stop the cluster   platformctl cluster down")
    if info.status != "SUCCEEDED":
        raise PlatformError(f"the demo job ended {info.status}; see `platformctl jobs logs "
                            f"{sub.job_id}`")
