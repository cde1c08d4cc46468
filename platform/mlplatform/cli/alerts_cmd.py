"""`platformctl alerts list` and `platformctl alerts ack`: what the platform raised (validation,
drift, live drift, quality, guardrails, anomalies, failed runs, triggers) and who has seen it."""

from __future__ import annotations

import datetime as dt
import getpass
import os
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError
from mlplatform.monitoring.alerts import SEVERITIES, SOURCES, ack, list_alerts
from mlplatform.spec_types import duration_seconds

alerts_app = typer.Typer(help="Alerts the platform raised.", no_args_is_help=True)

_COLOURS = {"critical": "red", "warning": "yellow", "info": "cyan"}


def parse_since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`--since`: a duration back from now (90s, 15m, 2h, 7d, 2w) or an ISO date/time (UTC
    unless it names its offset). Returns an aware UTC datetime."""
    now = now or dt.datetime.now(dt.UTC)
    text = value.strip()
    if text[:-1].isdigit() and text[-1:] in ("s", "m", "h", "d", "w"):
        return now - dt.timedelta(seconds=duration_seconds(text))
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--since {value!r}: expected a duration (30m, 2h, 7d) or an ISO date "
                         "(2026-05-01 or 2026-05-01T12:00:00)") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _user() -> str:
    """Who acknowledges: the OS user name (a container may have no passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


@alerts_app.command("list")
@handle_errors
def list_cmd(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline.")] = None,
    since: Annotated[str | None, typer.Option(help="Only alerts raised since: a duration back "
                                              "from now (2h, 7d) or an ISO date/time (UTC).")] = None,
    severity: Annotated[str | None, typer.Option(help="At least this severity: info, warning "
                                                 "or critical.")] = None,
    source: Annotated[str | None, typer.Option(help=f"Only this source: {', '.join(SOURCES)}.")] = None,
    unacked: Annotated[bool, typer.Option("--unacked", help="Only alerts nobody acknowledged.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    json_: JsonOpt = False,
) -> None:
    """Alerts, newest first: from validation, drift, live drift, quality, rollouts, anomalies,
    failed runs and triggers."""
    if severity is not None and severity not in SEVERITIES:
        raise InputError(f"--severity {severity!r}: expected one of {', '.join(SEVERITIES)}")
    if source is not None and source not in SOURCES:
        raise InputError(f"--source {source!r}: expected one of {', '.join(SOURCES)}")
    if limit < 1:
        raise InputError(f"--limit {limit}: expected a positive number")
    since_at = parse_since(since) if since is not None else None
    found = list_alerts(services_for(), pipeline=pipeline, since=since_at, severity=severity,
                        source=source, unacked=unacked, limit=limit)
    if json_:
        print_json(found)
        return
    table = Table("id", "when (UTC)", "pipeline", "source", "severity", "kind", "message")
    table.add_column("link", overflow="fold")  # whole, to be copied: a report path, run:<id>
    table.add_column("acked")
    table.add_column("webhook")
    for a in found:
        colour = _COLOURS.get(a.severity, "white")
        table.add_row(str(a.id), a.created_at.strftime("%Y-%m-%d %H:%M:%S"), escape(a.pipeline),
                      a.source, f"[{colour}]{a.severity}[/]", escape(a.kind), escape(a.message[:300]),
                      escape(a.link or ""), escape(a.acked_by or ""), escape(a.notified or ""))
    console.print(table)
    if not found:
        console.print("no alerts", style="dim")


@alerts_app.command("ack")
@handle_errors
def ack_cmd(alert_id: Annotated[int, typer.Argument(metavar="ID", help="The alert's id.")],
            json_: JsonOpt = False) -> None:
    """Acknowledge an alert (recorded with your user name); acknowledging twice keeps the first."""
    result = ack(services_for(), alert_id, by=_user())
    if json_:
        print_json(result)
        return
    a = result.alert
    when = a.acked_at.strftime("%Y-%m-%d %H:%M:%S") if a.acked_at else "?"
    if result.already_acked:
        console.print(f"alert {a.id} was already acknowledged by {escape(a.acked_by or '?')} at {when} UTC",
                      highlight=False)
    else:
        console.print(f"alert {a.id} acknowledged by {escape(a.acked_by or '?')} at {when} UTC",
                      highlight=False)
