"""`platformctl features list | show | materialize | get`: the feature store by hand."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from pydantic import BaseModel
from rich.progress import Progress
from rich.table import Table

from mlplatform.cli.output import (
    JsonOpt,
    console,
    err_console,
    handle_errors,
    print_json,
    services_for,
    settings_for,
)
from mlplatform.errors import InputError
from mlplatform.redact import redact_url
from mlplatform.services import Services

app = typer.Typer(help="Feature views: offline and online stores.", no_args_is_help=True)

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", help="Pipeline of the view, when "
                                                 "several pipelines have a view of that name.")]


def parse_time(value: str | None, flag: str) -> dt.datetime | None:
    """ISO 8601 (a date, or a date and time; UTC unless it names a zone)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(f"{flag} {value!r}: expected an ISO 8601 time such as 2026-01-05 or "
                         "2026-01-05T12:00:00Z") from None
    if pd.isna(ts):
        raise InputError(f"{flag} {value!r}: expected an ISO 8601 time")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


class ViewInfo(BaseModel):
    pipeline: str
    view: str
    version: str
    versions: list[str]
    entity: str
    timestamp: str
    created_timestamp: str | None
    ttl: str
    transformation: str | None
    features: list[str]
    offline_uri: str
    offline_writes: int
    offline_dates: list[str]


def _info(view, storage_uri: str) -> ViewInfo:  # noqa: ANN001
    from mlplatform.features.offline_store import OfflineStore

    offline = OfflineStore(storage_uri, view.pipeline)
    writes = offline.writes(view.name)
    dates = sorted({p.rsplit("/date=", 1)[-1].split("/", 1)[0] for files in writes.values() for p in files})
    return ViewInfo(pipeline=view.pipeline, view=view.name, version=view.version, versions=view.versions,
                    entity=view.entity, timestamp=view.timestamp_column,
                    created_timestamp=view.created_timestamp_column, ttl=view.spec.get("ttl", ""),
                    transformation=view.transformation, features=view.features,
                    offline_uri=redact_url(offline.view_uri(view.name)), offline_writes=len(writes),
                    offline_dates=dates)


@app.command("list")
@handle_errors
def list_(pipeline: PipelineOpt = None, json_: JsonOpt = False) -> None:
    """Feature views the featurize step has registered."""
    from mlplatform.features.catalog import registered_views

    settings = settings_for()
    views = [_info(v, settings.storage_uri)
             for v in registered_views(Services(settings).metadata, pipeline)]
    if json_:
        print_json(views)
        return
    if not views:
        console.print("no feature views registered yet: run a pipeline with `features.views` "
                      "(e.g. `platformctl demo`)")
        return
    table = Table("pipeline", "view", "version", "entity", "ttl", "features", "offline writes", "dates")
    for v in views:
        dates = f"{v.offline_dates[0]} .. {v.offline_dates[-1]}" if v.offline_dates else "-"
        table.add_row(v.pipeline, v.view, v.version, v.entity, v.ttl, str(len(v.features)),
                      str(v.offline_writes), dates)
    console.print(table)


@app.command("show")
@handle_errors
def show(view: Annotated[str, typer.Argument(help="Feature view name.")],
         pipeline: PipelineOpt = None, json_: JsonOpt = False) -> None:
    """A view's definition, versions and offline partitions."""
    from mlplatform.features.catalog import find_view

    settings = settings_for()
    info = _info(find_view(Services(settings).metadata, view, pipeline), settings.storage_uri)
    if json_:
        print_json(info)
        return
    console.print(f"[bold]{info.pipeline}/{info.view}[/] version {info.version} "
                  f"(versions seen: {', '.join(info.versions)})", highlight=False)
    console.print(f"entity {info.entity}, event time {info.timestamp}"
                  f"{', created time ' + info.created_timestamp if info.created_timestamp else ''}, "
                  f"ttl {info.ttl}, transformation {info.transformation or '-'}", highlight=False)
    console.print(f"offline: {info.offline_uri} ({info.offline_writes} write(s), "
                  f"{len(info.offline_dates)} date partition(s))", highlight=False)
    table = Table("feature")
    for f in info.features:
        table.add_row(f)
    console.print(table)


@app.command("materialize")
@handle_errors
def materialize(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Pipeline spec (YAML).")],
    since: Annotated[str | None, typer.Option(help="Only rows with event time >= SINCE (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only rows with event time <= UNTIL.")] = None,
    view: Annotated[list[str] | None, typer.Option("--view", help="Only this view (repeatable).")] = None,
    json_: JsonOpt = False,
) -> None:
    """Copy the newest offline row per entity into the online store.

    Without --since / --until it is incremental: only offline writes this online
    store has not materialised yet.
    """
    from mlplatform.features.store import MaterializeReport
    from mlplatform.spec_loader import load_spec

    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start and end and start > end:
        raise InputError(f"--since {since} is after --until {until}")
    spec = load_spec(spec_path)
    # Transformations are imported from the spec's folder, as a job run there would.
    sys.path.insert(0, str(spec_path.resolve().parent))
    fstore = services_for().feature_store(spec)
    names = view or list(fstore.views)
    for name in names:
        fstore.view(name)  # an unknown name fails before anything is written
    reports: list[MaterializeReport] = []
    with Progress(console=err_console, transient=True, disable=json_) as progress:
        task = progress.add_task("materialising", total=len(names))

        def done(rep: MaterializeReport) -> None:
            progress.advance(task)
            reports.append(rep)

        fstore.materialize(names, since=start, until=end, on_view=done)
    fstore.close()
    if json_:
        print_json(reports)
        return
    table = Table("view", "mode", "offline writes", "rows read", "entities written", "seconds")
    for r in reports:
        table.add_row(r.view, r.mode, str(r.writes), str(r.rows_read), str(r.entities_written),
                      f"{r.seconds:.2f}")
    console.print(table)
    console.print(f"online store: {fstore.online.url}", highlight=False)


@app.command("get")
@handle_errors
def get(view: Annotated[str, typer.Argument(help="Feature view name.")],
        entities: Annotated[list[str], typer.Argument(metavar="ENTITY...", help="Entity key(s).")],
        pipeline: PipelineOpt = None,
        at: Annotated[str | None, typer.Option(
            help="Check the TTL as of this time (default: now); a value newer than AT counts as "
                 "outside its age.")] = None,
        feature: Annotated[list[str] | None, typer.Option("--feature", help="Only this feature "
                                                          "(repeatable).")] = None,
        json_: JsonOpt = False) -> None:
    """The online feature vector of one or more entities, as a model would be served it."""
    from mlplatform.features.catalog import find_view
    from mlplatform.features.definitions import parse_refs
    from mlplatform.features.online_store import open_online_store
    from mlplatform.features.store import read_online

    when = parse_time(at, "--at")
    settings = settings_for()
    found = find_view(Services(settings).metadata, view, pipeline)
    refs = parse_refs([f"{view}:{f}" for f in (feature or ["*"])], {view: found})
    online = open_online_store(settings.online_store_url)
    try:
        vectors = read_online(online, {view: found}, refs, entities, at=when)
    finally:
        online.close()
    if json_:
        print_json(vectors)
        return
    # One column per entity, one row per feature: vectors are long, entities few.
    table = Table("feature", *[v.entity for v in vectors])
    table.add_row("[dim]event time[/]", *[
        (t.isoformat() if (t := v.event_ts.get(view)) else "-") for v in vectors])
    for r in refs:
        table.add_row(r.feature, *[
            str(v.values[r.feature]) if v.statuses[r.feature] == "PRESENT"
            else f"[dim]{v.statuses[r.feature]}[/]" for v in vectors])
    console.print(table)
