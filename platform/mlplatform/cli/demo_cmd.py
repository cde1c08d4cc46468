"""`platformctl demo-data` and `platformctl demo`: the whole loop on the embedded default."""

from __future__ import annotations

import datetime as dt
import json
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlplatform.cli.demo_loop import (
    FAULT_MODULE,
    LiveMonitoring,
    bad_model_spec,
    follow,
    monitor_rollout,
    outcome_line,
    still_serving,
)
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
    kind: str = "normal"
    rollout_id: str | None = None
    rollout_status: str | None = None
    rollout: str | None = None
    traffic: dict[str, Any] = {}
    live: LiveMonitoring | None = None
    alerts: list[str] = []
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
    last = next((o for o in reversed(outcomes) if o.sample_entity), outcomes[-1])
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


def _kind(cfg: DemoDataConfig, day: int, bad_day: int | None) -> str:
    if cfg.break_day == day:
        return "schema break"
    if bad_day == day:
        return "bad model"
    if cfg.noise_day == day:
        return "noisy labels"
    if cfg.drift_day == day:
        return "drift"
    return "first" if day == 1 else "normal"


def _allow_estimator_module(module: str) -> None:
    from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES

    current = os.environ.get("PLATFORM_ESTIMATOR_MODULES") or DEFAULT_ESTIMATOR_MODULES
    if module not in current.split(","):
        os.environ["PLATFORM_ESTIMATOR_MODULES"] = f"{current},{module}"


def _roll(settings: Settings, o: DayOutcome, detail: RunDetail | None, quiet: bool,
          spec_file: Path) -> None:
    """Follow the run's rollout, if it started one, to its decision (traffic and outcomes
    meanwhile), then the monitor's live drift and quality over that traffic."""
    steps = {s.step: s.summary for s in detail.steps} if detail else {}
    started = steps.get("rollout") or {}
    if not started.get("rollout_id"):
        return
    with console.status("rollout...") if not quiet else nullcontext() as status:
        state, traffic = follow(settings, "demo", started["rollout_id"],
                                show=status.update if status else (lambda _: None))
    o.rollout_id, o.rollout_status, o.traffic = state.id, state.status, traffic
    o.rollout = outcome_line(state)
    o.champion = Services(settings).models.champion("demo")
    try:
        o.live = monitor_rollout(settings, spec_file, state)
    except PlatformError as exc:
        o.live = LiveMonitoring(version=state.champion, drift=f"not measured: {exc.message}")


def _live_line(live: LiveMonitoring | None) -> str | None:
    if live is None:
        return None
    return (f"v{live.version} on {live.rows} requests: {live.drift}"
            + (f"; {live.quality}" if live.quality else ""))


def _day_alerts(services: Services, since: dt.datetime) -> list[str]:
    from mlplatform.monitoring.alerts import list_alerts

    found = list_alerts(services, pipeline="demo", since=since, limit=50)
    return [f"#{a.id} {a.severity} {a.source}/{a.kind}" for a in reversed(found)]


def _report(settings: Settings, outcomes: list[DayOutcome]) -> Path:
    """The loop's HTML report (timeline, traffic weights, per-variant errors, latency and
    outcomes, the A/B lift over time), once the replicas have flushed their logs."""
    import time

    from mlplatform.rollout import report
    from mlplatform.rollout.store import RolloutStore

    if any(o.rollout_id for o in outcomes):  # live traffic: the replicas write its log every second
        time.sleep(2.5)
    store = RolloutStore(Services(settings).metadata)
    rollouts = [r for r in (store.get(o.rollout_id) for o in outcomes if o.rollout_id) if r is not None]
    days = [report.DayRow(day=o.day, date=str(dt.date.fromisoformat(Path(o.file).stem.split("_")[-1])),
                          kind=o.kind, run_id=o.run_id, run_status=o.run_status,
                          model_version=o.model_version,
                          gate=o.gate, rollout_id=o.rollout_id,
                          outcome=o.rollout or (f"v{o.model_version} {o.gate} by the gate" if o.model_version
                                                else o.message[:200]),
                          champion_after=o.champion,
                          live_drift=_live_line(o.live),
                          live_drift_report=o.live.drift_report if o.live else None,
                          alerts=o.alerts)
            for o in outcomes]
    built = report.build(settings.storage_uri, "churn", "demo", days, rollouts, None)
    return report.write(built, settings.home / "demo" / "loop.html")


@handle_errors
def demo(
    days: Annotated[int, typer.Option(help="Days of data, one pipeline run each.")] = 6,
    rows_per_day: Annotated[int, typer.Option(help="Events per day.")] = 2000,
    drift_day: Annotated[int | None, typer.Option(help="Day from which the data drifts "
                         "(0: never).")] = 3,
    break_day: Annotated[int | None, typer.Option(help="Day whose batch breaks the schema: the run "
                         "stops at validation, the champion keeps serving (0: never).")] = 6,
    noise_day: Annotated[int | None, typer.Option(help="Day whose labels are shuffled: the gate "
                         "rejects the model trained on it (0: never).")] = 5,
    bad_model_day: Annotated[int | None, typer.Option(help="Day whose model has a bug no offline "
                             "check sees (it fails one-row requests): its canary is rolled back "
                             "(0: never).")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed of the data.")] = 7,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream each job's logs.")] = False,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local cluster.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Bring up the local cluster and replay a stream of daily batches: each day's file
    lands, and the demo pipeline (jobs/examples/demo.yaml) runs on it as a Ray Job:
    ingest -> validate -> featurize -> training_set -> train -> evaluate -> register -> promote ->
    rollout. Each canary then gets live traffic and outcomes until it promotes or rolls back by
    itself; the days show each kind of day (first, normal, bad model, drift, noisy labels,
    schema break) and end in an HTML report."""
    cfg = _config(days=days, rows_per_day=rows_per_day, seed=seed,
                  drift_day=drift_day or None,
                  break_day=break_day if break_day and break_day <= days else None,
                  noise_day=noise_day if noise_day and noise_day <= days else None)
    bad_day = bad_model_day if bad_model_day and bad_model_day <= days else None
    say = (lambda *_, **__: None) if json_ else console.print
    say("[bold]1/3[/] local Ray cluster")
    if bad_day:  # the operator's allow-list: the demo starts the cluster, so it is the operator
        _allow_estimator_module(FAULT_MODULE)
    with console.status("starting Ray (about 15 s)...") if not json_ else nullcontext():
        started = cluster.up(load_settings(), num_cpus=num_cpus)
    say(f"    {started.message}")
    if bad_day and not started.started:
        say(f"    [yellow]the cluster was already running: its estimator allow-list is its operator's, "
            f"so day {bad_day} trains the normal model (no injected bug)[/]")
        bad_day = None
    settings = settings_for()
    data_dir = settings.home / "demo" / "data"
    spec = package_dir("jobs") / "examples" / "demo.yaml"
    bad_spec = bad_model_spec(spec, settings.home / "demo" / "bad-model") if bad_day else spec
    services = Services(settings)
    store = services.metadata
    say(f"[bold]2/3[/] {cfg.days} day(s) of events -> {data_dir}; one run of {spec.name} per day, "
        "then live traffic and outcomes for each rollout until it decides")
    base = _entities(cfg)
    outcomes: list[DayOutcome] = []
    for day in range(1, cfg.days + 1):
        f = write_day(data_dir, cfg, day, base)
        day_started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        spec_file = bad_spec if day == bad_day else spec
        sub, info = submit_and_watch(settings, spec_file, steps=None, run_id=None, wait=not follow,
                                     follow=follow, json_=True, working_dir=spec_file.parent,
                                     quiet=True)
        assert info is not None
        o = _outcome(f, sub.job_id, info.status, store.run(sub.run_id))
        o.kind = _kind(cfg, day, bad_day)
        _roll(settings, o, store.run(sub.run_id), json_, spec_file)
        o.alerts = _day_alerts(services, day_started)
        if o.kind == "bad model" and o.rollout_status == "promoted":
            o.expected = False  # the loop let a broken model through
        if f.broken and o.expected and services.models.champion("demo"):
            o.rollout = f"stopped at validation; v{still_serving(settings, 'demo')} keeps serving"
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
        if o.rollout:
            colour = "green" if o.rollout_status == "promoted" else "yellow"
            say(f"      [{colour}]{o.rollout}[/]", highlight=False)
        if o.live:
            colour = "yellow" if o.live.dataset_drift else "white"
            say(f"      [{colour}]live: {escape(_live_line(o.live) or '')}[/]", highlight=False)
        if o.alerts:
            say(f"      alerts: {', '.join(o.alerts)}", highlight=False)
    say("[bold]3/3[/] summary")
    report = _report(settings, outcomes)
    if json_:
        print_json({"cluster": started.state.model_dump(mode="json"), "report": str(report),
                    "days": [o.model_dump(mode="json") for o in outcomes]})
    else:
        table = Table("day", "kind", "run", "status", "ingested", "valid", "quarantined", "training rows",
                      "drifted features", "model", "holdout AUC", "gate", "rollout", "champion")
        for o in outcomes:
            table.add_row(str(o.day), o.kind, o.run_id, o.run_status, str(o.ingested_rows or "-"),
                          str(o.valid_rows if o.valid_rows is not None else "-"),
                          str(o.quarantined_rows if o.quarantined_rows is not None else "-"),
                          str(o.training_rows or "-"), ", ".join(o.drifted_features),
                          f"v{o.model_version}" if o.model_version else "-",
                          f"{o.roc_auc:.3f}" if o.roc_auc is not None else "-", o.gate or "-",
                          o.rollout_status or "-", f"v{o.champion}" if o.champion else "-")
        console.print(table)
        say("The loop, day by day:")
        for o in outcomes:
            what = o.rollout or (f"v{o.model_version} {o.gate}" if o.model_version else o.message[:100])
            say(f"  day {o.day} {escape('[' + o.kind + ']')}: {escape(what)}", highlight=False,
                soft_wrap=True)
        say(f"  report with plots    {report}")
        last = outcomes[-1]
        sampled = next((o for o in reversed(outcomes) if o.sample_entity), last)
        say("Where to look:")
        say(f"  Ray dashboard        {started.state.dashboard_url}  (token: {settings.auth_token_path})")
        say(f"  the last run         platformctl runs show {last.run_id}")
        if last.report:
            say(f"  its validation       {last.report}")
        say("  alerts               platformctl alerts list demo  (acknowledge: platformctl alerts ack ID)")
        say("  live view            platformctl monitor demo  (drift now: platformctl monitor drift demo)")
        live = next((o.live for o in reversed(outcomes) if o.live and o.live.drift_report), None)
        if live:
            say(f"  live drift report    {live.drift_report}")
        say("  rollouts             platformctl rollout list demo  (one: platformctl rollout status demo)")
        say("  the last A/B test    platformctl ab status demo")
        say("  feature views        platformctl features list")
        if sampled.sample_entity:
            # The demo's events are dated in the past: read the vector as of the last one
            # (without --at, the 7-day TTL has long expired and the values read as such).
            say(f"  an online vector     platformctl features get customer_activity {sampled.sample_entity} "
                f"--at {sampled.sample_at}")
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
