"""`platformctl demo-data` and `platformctl demo`: the whole loop on the embedded default."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlplatform.cli.jobs_cmd import submit_and_watch
from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.data.synthetic import DayFile, DemoDataConfig, _entities, write_day, write_demo_data
from mlplatform.errors import InputError, PlatformError
from mlplatform.metadata.store import RunDetail
from mlplatform.runtime import local as cluster
from mlplatform.runtime.jobs import package_dir
from mlplatform.services import Services
from mlplatform.settings import Settings, load_settings


def _config(**kwargs: object) -> DemoDataConfig:
    try:
        return DemoDataConfig.model_validate({k: v for k, v in kwargs.items() if v is not None})
    except ValidationError as exc:
        e = exc.errors()[0]
        flag = "--" + str(e["loc"][0]).replace("_", "-")
        raise InputError(f"{flag} {e.get('input')!r}: {e['msg']}") from None


@handle_errors
def demo_data(
    out: Annotated[Path, typer.Argument(help="Folder to write one Parquet file per day into.")],
    days: Annotated[int, typer.Option(help="Number of days.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Events per day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    drift_day: Annotated[int | None, typer.Option(help="Day from which features and the "
                         "label relation drift.")] = None,
    break_day: Annotated[int | None, typer.Option(help="Day written with schema breaks.")] = None,
    noise_day: Annotated[int | None, typer.Option(help="Day whose labels are shuffled.")] = None,
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
                  break_day=break_day, noise_day=noise_day, entities=entities, start=start_date)
    with Progress(TextColumn("demo data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=json_, transient=True) as bar:
        task = bar.add_task("days", total=cfg.days)
        files = write_demo_data(out, cfg, on_day=lambda _: bar.advance(task))
    if json_:
        print_json(files)
        return
    for f in files:
        tags = " ".join(t for t, on in (("drifted", f.drifted), ("BROKEN", f.broken),
                                        ("shuffled-labels", f.noisy)) if on)
        console.print(f"day {f.day:>3} {f.date} {f.rows:>8} rows  {f.path} {tags}", highlight=False)


class DayOutcome(BaseModel):
    day: int
    file: str
    drifted_data: bool
    broken_data: bool
    job_id: str
    job_status: str
    run_id: str
    run_status: str
    message: str
    ingested_rows: int | None = None
    valid_rows: int | None = None
    quarantined_rows: int | None = None
    drifted_features: list[str] = []
    report: str | None = None
    training_rows: int | None = None
    model_version: str | None = None
    gate: str | None = None
    gate_reason: str | None = None
    roc_auc: float | None = None
    champion: str | None = None
    noisy_labels: bool = False
    sample_entity: str | None = None
    sample_at: str | None = None
    expected: bool


def _outcome(f: DayFile, job_id: str, job_status: str, detail: RunDetail | None) -> DayOutcome:
    steps: dict[str, Any] = {s.step: s.summary for s in detail.steps} if detail else {}
    ingest, validate = steps.get("ingest", {}), steps.get("validate", {})
    training = steps.get("training_set", {})
    registered = (steps.get("register") or {}).get("demo") or {}
    evaluated = (steps.get("evaluate") or {}).get("demo") or {}
    promoted = (steps.get("promote") or {}).get("demo") or {}
    ok = job_status == "SUCCEEDED"
    failed_at_validate = bool(detail and detail.steps and detail.steps[-1].step == "validate"
                              and detail.steps[-1].status == "FAILED")
    return DayOutcome(
        day=f.day, file=f.path, drifted_data=f.drifted, broken_data=f.broken, job_id=job_id,
        job_status=job_status, run_id=detail.run_id if detail else "-",
        run_status=detail.status if detail else "-",
        message=(detail.message if detail else ""),
        ingested_rows=ingest.get("rows"), valid_rows=validate.get("rows_valid"),
        quarantined_rows=validate.get("rows_quarantined"),
        drifted_features=validate.get("drifted_features", []), report=validate.get("report"),
        training_rows=training.get("rows"), model_version=registered.get("version"),
        gate=None if not registered else ("passed" if registered.get("passed") else "rejected"),
        gate_reason=evaluated.get("reason"), roc_auc=(evaluated.get("challenger") or {}).get("roc_auc"),
        champion=(promoted or registered).get("champion"), noisy_labels=f.noisy,
        sample_entity=training.get("sample_entity"),
        sample_at=training.get("sample_at"),
        expected=ok if not f.broken else failed_at_validate)


def _served_example(settings: Settings, outcomes: list[DayOutcome]) -> list[str]:
    """Ask the served champion once by rows and once by entity id, and show the curl commands
    that do the same: the demo proves they work before it prints them."""
    from mlplatform.serving.client import ServeClient
    from mlplatform.serving.infra import json_value, sample_rows

    services = Services(settings)
    champion = services.models.champion("demo")
    if champion is None:
        return []
    row = sample_rows(services, "demo", champion, 1).iloc[0].to_dict()
    body = {"rows": [{k: json_value(v) for k, v in row.items()}]}
    request = settings.home / "demo" / "request.json"
    request.write_text(json.dumps(body, indent=2))
    client = ServeClient(settings, "demo")
    answer = client.predict(body)["predictions"][0]
    url = f"{settings.serve_url}/demo/predict"
    lines = [f"champion v{champion} at {settings.serve_url}/demo  (API: {settings.serve_url}/demo/docs)",
             f"by feature row (answered v{answer['version']}: {answer['prediction']}, score "
             f"{answer['score']:.3f}):",
             f"  curl -s -H 'content-type: application/json' -d @{request} {url}"]
    last = outcomes[-1]
    if last.sample_entity:
        ebody = {"entities": [last.sample_entity], "at": last.sample_at}
        eanswer = client.predict(ebody)["predictions"][0]
        lines += [f"by entity id, features from the online store as of the last event (answered "
                  f"v{eanswer['version']}: {eanswer['prediction']}, score {eanswer['score']:.3f}):",
                  f"  curl -s -H 'content-type: application/json' -d '{json.dumps(ebody)}' {url}"]
    lines += ["status, traffic split   platformctl serve status demo",
              "predict from the CLI    platformctl predict demo --entity "
              f"{last.sample_entity or 'ID'} --at {last.sample_at or 'TIME'}"]
    return lines


@handle_errors
def demo(
    days: Annotated[int, typer.Option(help="Days of data, one pipeline run each.")] = 5,
    rows_per_day: Annotated[int, typer.Option(help="Events per day.")] = 2000,
    drift_day: Annotated[int | None, typer.Option(help="Day from which the data drifts "
                         "(0: never).")] = 4,
    break_day: Annotated[int | None, typer.Option(help="Day whose batch breaks the schema.")] = None,
    noise_day: Annotated[int | None, typer.Option(help="Day whose labels are shuffled: the gate "
                         "rejects the model trained on it (0: never).")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed of the data.")] = 7,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream each job's logs.")] = False,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local cluster.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Bring up the local cluster and replay a stream of daily batches: each day's file
    lands, and the demo pipeline (jobs/examples/demo.yaml) runs on it as a Ray Job:
    ingest -> validate -> featurize -> training_set -> train -> evaluate -> register."""
    cfg = _config(days=days, rows_per_day=rows_per_day, seed=seed,
                  drift_day=drift_day or None, break_day=break_day,
                  noise_day=noise_day if noise_day and noise_day <= days else None)
    say = (lambda *_: None) if json_ else console.print
    say("[bold]1/3[/] local Ray cluster")
    with console.status("starting Ray (about 15 s)...") if not json_ else nullcontext():
        started = cluster.up(load_settings(), num_cpus=num_cpus)
    say(f"    {started.message}")
    settings = settings_for()
    data_dir = settings.home / "demo" / "data"
    spec = package_dir("jobs") / "examples" / "demo.yaml"
    store = Services(settings).metadata
    say(f"[bold]2/3[/] {cfg.days} day(s) of events -> {data_dir}; one run of {spec.name} per day")
    base = _entities(cfg)
    outcomes: list[DayOutcome] = []
    for day in range(1, cfg.days + 1):
        f = write_day(data_dir, cfg, day, base)
        sub, info = submit_and_watch(settings, spec, steps=None, run_id=None, wait=not follow,
                                     follow=follow, json_=True, working_dir=spec.parent,
                                     quiet=True)
        assert info is not None
        o = _outcome(f, sub.job_id, info.status, store.run(sub.run_id))
        outcomes.append(o)
        tags = "".join(t for t, on in ((" (drifted data)", f.drifted), (" (broken data)", f.broken),
                                       (" (shuffled labels)", f.noisy)) if on)
        colour = "green" if o.job_status == "SUCCEEDED" else ("yellow" if o.expected else "red")
        detail = (f"ingested {o.ingested_rows}, valid {o.valid_rows}, quarantined {o.quarantined_rows}"
                  if o.valid_rows is not None else o.message[:160])
        drift = f"; drift: {', '.join(o.drifted_features)}" if o.drifted_features else ""
        say(f"    day {day} {f.date}{tags}: [{colour}]{o.run_status}[/] {detail}{drift}", highlight=False)
        if f.broken and o.expected:
            say(f"      as expected, validation stopped the run: {o.message[:300]}", highlight=False)
        if o.model_version:
            say(f"      model v{o.model_version}: {o.gate_reason or o.gate}", highlight=False)
    say("[bold]3/3[/] summary")
    if json_:
        print_json({"cluster": started.state.model_dump(mode="json"),
                    "days": [o.model_dump(mode="json") for o in outcomes]})
    else:
        table = Table("day", "run", "status", "ingested", "valid", "quarantined", "training rows",
                      "drifted features", "model", "holdout AUC", "gate", "champion")
        for o in outcomes:
            table.add_row(str(o.day), o.run_id, o.run_status, str(o.ingested_rows or "-"),
                          str(o.valid_rows if o.valid_rows is not None else "-"),
                          str(o.quarantined_rows if o.quarantined_rows is not None else "-"),
                          str(o.training_rows or "-"), ", ".join(o.drifted_features),
                          f"v{o.model_version}" if o.model_version else "-",
                          f"{o.roc_auc:.3f}" if o.roc_auc is not None else "-", o.gate or "-",
                          f"v{o.champion}" if o.champion else "-")
        console.print(table)
        last = outcomes[-1]
        say("Where to look:")
        say(f"  Ray dashboard        {started.state.dashboard_url}  (token: {settings.auth_token_path})")
        say(f"  the last run         platformctl runs show {last.run_id}")
        if last.report:
            say(f"  its validation       {last.report}")
        say("  alerts               platformctl alerts list demo")
        say("  feature views        platformctl features list")
        if last.sample_entity:
            # The demo's events are dated in the past: read the vector as of the last one
            # (without --at, the 7-day TTL has long expired and the values read as such).
            say(f"  an online vector     platformctl features get customer_activity {last.sample_entity} "
                f"--at {last.sample_at}")
        say("  all runs             platformctl runs list demo")
        if any(o.model_version for o in outcomes):
            newest = next(o.model_version for o in reversed(outcomes) if o.model_version)
            say("  model versions       platformctl models list demo")
            say(f"  one version          platformctl models show demo {newest}")
            say(f"  reproduce it         platformctl models reproduce demo {newest}")
            say("  the MLflow UI        platformctl ui")
        served = _served_example(settings, outcomes)
        if served:
            say("Served over HTTP (Ray Serve):")
            for line in served:
                say(f"  {line}", highlight=False, soft_wrap=True)
        say("  stop the cluster     platformctl cluster down")
    unexpected = [o for o in outcomes if not o.expected]
    if unexpected:
        raise PlatformError(f"day {unexpected[0].day} ended {unexpected[0].job_status}: "
                            f"see `platformctl jobs logs {unexpected[0].job_id}`")
