"""The `platformctl` typer app: one entry point for every manual and automated step."""

from __future__ import annotations

import typer

from mlplatform import __version__
from mlplatform.cli import (
    alerts_cmd,
    ci_cmd,
    cluster_cmd,
    config_cmd,
    data_cmd,
    demo_cmd,
    dryrun_cmd,
    features_cmd,
    jobs_cmd,
    models_cmd,
    monitor_cmd,
    plan_cmd,
    rollout_cmd,
    runs_cmd,
    serve_cmd,
    spec_cmd,
    train_cmd,
    watch_cmd,
)

app = typer.Typer(
    name="platformctl",
    help="mlplatform: an automated MLOps platform on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(cluster_cmd.app, name="cluster")
app.add_typer(jobs_cmd.app, name="jobs")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(spec_cmd.spec_app, name="spec")
app.add_typer(spec_cmd.config_app, name="config")
spec_cmd.config_app.command("check")(config_cmd.check)
app.add_typer(data_cmd.schema_app, name="schema")
app.add_typer(alerts_cmd.alerts_app, name="alerts")
app.add_typer(features_cmd.app, name="features")
app.add_typer(models_cmd.app, name="models")
app.add_typer(serve_cmd.app, name="serve")
app.add_typer(rollout_cmd.app, name="rollout")
app.add_typer(rollout_cmd.ab_app, name="ab")
app.add_typer(monitor_cmd.monitor_app, name="monitor")
app.command("init")(spec_cmd.init)
app.command("validate")(data_cmd.validate)
app.command("submit")(jobs_cmd.submit)
app.command("plan")(plan_cmd.plan)
app.command("apply")(plan_cmd.apply)
app.command("dry-run")(dryrun_cmd.dry_run)
app.command("ci")(ci_cmd.ci)
app.command("train")(train_cmd.train)
app.command("tune")(train_cmd.tune)
app.command("ui")(train_cmd.ui)
app.command("predict")(serve_cmd.predict)
app.command("demo-data")(demo_cmd.demo_data)
app.command("demo")(demo_cmd.demo)
app.command("watch")(watch_cmd.watch)
app.command("triggers")(watch_cmd.triggers)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"platformctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """mlplatform: validate, featurize, retrain, gate, roll out and monitor models on Ray."""


def main() -> None:
    from mlplatform.process_exit import fast_exit

    try:
        app()
    finally:
        fast_exit()
