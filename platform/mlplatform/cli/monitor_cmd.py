"""`platformctl monitor drift|quality NAME`: live drift and live quality of a served pipeline, on
demand (the trigger watcher runs the same functions on a schedule).

Exit codes, so a script or a cron job can act on the verdict:
  0  no dataset drift / quality within the threshold
  3  dataset drift (drift) / the metric past --min-value (quality)
  4  no verdict: too few predictions in the window, no champion, no reference or no labels
  1  an error; 2  bad input (a window that does not parse, a pipeline that is not served)
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mlplatform.cli.default_group import DefaultCommandGroup
from mlplatform.cli.monitor_view_cmd import register
from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError
from mlplatform.services import Services
from mlplatform.serving.client import ServeControl
from mlplatform.spec import PipelineSpec
from mlplatform.spec_types import duration_seconds

if TYPE_CHECKING:  # the modules themselves load scipy and scikit-learn: only the commands need them
    from mlplatform.monitoring.live_drift import LiveDriftReport
    from mlplatform.monitoring.quality import QualityReport

monitor_app = typer.Typer(
    help="A served pipeline's live view (`monitor NAME`), live drift and live quality.",
    no_args_is_help=True, cls=DefaultCommandGroup)

EXIT_FLAGGED = 3
EXIT_NO_VERDICT = 4

NameArg = Annotated[str, typer.Argument(help="The served pipeline.")]
WindowOpt = Annotated[str, typer.Option("--window", help="How far back from now (30m, 1h, 1d).")]
NoAlertOpt = Annotated[bool, typer.Option("--no-alert", help="Record the results but raise no alert.")]


def _window(value: str) -> float:
    try:
        seconds = duration_seconds(value)
    except (ValueError, TypeError):
        seconds = 0
    if seconds <= 0:
        raise InputError(f"--window {value!r}: expected a positive duration such as 30m, 1h or 1d")
    return float(seconds)


def served_spec(services: Services, name: str) -> PipelineSpec:
    """The spec the pipeline is served with: what its log holds and its champion's settings."""
    control = ServeControl(services.settings)
    spec = control.deployed_spec(name)
    if spec is None:
        served = control.served()
        raise InputError(f"pipeline {name!r} is not served; served: {', '.join(served) or 'none'} "
                         "(live monitoring reads the prediction log of a served pipeline)")
    return spec


def _when(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}"


@monitor_app.command("drift")
@handle_errors
def drift(name: NameArg, window: WindowOpt = "1h", no_alert: NoAlertOpt = False,
          json_: JsonOpt = False) -> None:
    """Compare the champion's served traffic of the last window with its training data."""
    seconds = _window(window)
    services = services_for()
    from mlplatform.monitoring.live_drift import run_live_drift

    report = run_live_drift(services, served_spec(services, name), window_s=seconds, alert=not no_alert)
    if json_:
        print_json(report)
    else:
        _show_drift(report)
    if not report.enough_rows or not report.features:
        raise typer.Exit(EXIT_NO_VERDICT)
    if report.dataset_drift:
        raise typer.Exit(EXIT_FLAGGED)


def _show_drift(report: LiveDriftReport) -> None:
    console.print(f"{report.pipeline} v{report.model_version or '-'}: {report.rows} predictions from "
                  f"{_when(report.window_start)} to {_when(report.window_end)} UTC; "
                  f"reference: {report.reference}",
                  highlight=False)
    if report.features:
        table = Table("feature", "method", "score", "threshold", "live n", "verdict")
        for f in report.features:
            table.add_row(f.feature, f.method, f"{f.statistic:.4g}", f"{f.threshold:.4g}",
                          str(f.current_size), "[yellow]drift[/]" if f.drifted else "[green]ok[/]")
        console.print(table)
    colour = "red" if report.dataset_drift else "green"
    console.print(f"[{colour}]{report.message}[/]", highlight=False)
    if report.report_uri:
        console.print(f"report: {report.report_uri}", highlight=False)
    if report.alert_id is not None:
        console.print(f"alert {report.alert_id} raised", highlight=False)


@monitor_app.command("quality")
@handle_errors
def quality(name: NameArg, window: WindowOpt = "1h",
            min_value: Annotated[float | None, typer.Option(
                "--min-value", help="Alert (and exit 3) when the metric is past this value.")] = None,
            no_alert: NoAlertOpt = False, json_: JsonOpt = False) -> None:
    """The realised metric over the feedback so far, and for classifiers its CBPE estimate."""
    seconds = _window(window)
    services = services_for()
    from mlplatform.monitoring.quality import run_quality

    report = run_quality(services, served_spec(services, name), window_s=seconds, min_value=min_value,
                         alert=not no_alert)
    if json_:
        print_json(report)
    else:
        _show_quality(report)
    if report.realised is None and report.estimated is None:
        raise typer.Exit(EXIT_NO_VERDICT)
    if report.below_min:
        raise typer.Exit(EXIT_FLAGGED)


def _show_quality(report: QualityReport) -> None:
    console.print(f"{report.pipeline} v{report.model_version or '-'} from {_when(report.window_start)} to "
                  f"{_when(report.window_end)} UTC: {report.message}", highlight=False)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if report.report_uri:
        console.print(f"report: {report.report_uri}", highlight=False)
    if report.alert_id is not None:
        console.print(f"alert {report.alert_id} raised", highlight=False)


register(monitor_app)  # `monitor NAME`: the live view, the group's default command
