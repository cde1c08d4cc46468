"""The `platformctl` typer app: one entry point for every manual and automated step.

A command's module is imported only when that command runs: importing every command module
cost 1.5 s of every invocation, `platformctl --version` included (SQLAlchemy, pyarrow and
pandas behind the stores and the demo data). `platformctl` with no command, or with one it
does not know, builds the whole app, so its help and its "no such command" list every
command. `app` (tests, `typer.testing`) is the whole app too.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from mlplatform import __version__

# Command groups: name -> (module in mlplatform.cli, its typer app).
GROUPS: dict[str, tuple[str, str]] = {
    "cluster": ("cluster_cmd", "app"),
    "jobs": ("jobs_cmd", "app"),
    "runs": ("runs_cmd", "app"),
    "spec": ("spec_cmd", "spec_app"),
    "config": ("config_cmd", "config_app"),  # spec_cmd's `show`, with config_cmd's `check`
    "schema": ("data_cmd", "schema_app"),
    "alerts": ("alerts_cmd", "alerts_app"),
    "features": ("features_cmd", "app"),
    "models": ("models_cmd", "app"),
    "serve": ("serve_cmd", "app"),
    "rollout": ("rollout_cmd", "app"),
    "ab": ("rollout_cmd", "ab_app"),
    "monitor": ("monitor_cmd", "monitor_app"),
}
# Single commands: name -> (module in mlplatform.cli, its function).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("spec_cmd", "init"),
    "validate": ("data_cmd", "validate"),
    "submit": ("jobs_cmd", "submit"),
    "plan": ("plan_cmd", "plan"),
    "apply": ("plan_cmd", "apply"),
    "dry-run": ("dryrun_cmd", "dry_run"),
    "ci": ("ci_cmd", "ci"),
    "train": ("train_cmd", "train"),
    "tune": ("train_cmd", "tune"),
    "ui": ("train_cmd", "ui"),
    "predict": ("serve_cmd", "predict"),
    "demo-data": ("demo_cmd", "demo_data"),
    "demo": ("demo_cmd", "demo"),
    "watch": ("watch_cmd", "watch"),
    "triggers": ("watch_cmd", "triggers"),
}


def _member(module: str, attr: str) -> Any:
    return getattr(importlib.import_module(f"mlplatform.cli.{module}"), attr)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"platformctl {__version__}")
        raise typer.Exit()


def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """mlplatform: validate, featurize, retrain, gate, roll out and monitor models on Ray."""


def build(only: str | None = None) -> typer.Typer:
    """The app with every command, or with the one named `only` (a group or a command)."""
    built = typer.Typer(
        name="platformctl",
        help="mlplatform: an automated MLOps platform on Ray.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    for name, (module, attr) in GROUPS.items():
        if only in (None, name):
            built.add_typer(_member(module, attr), name=name)
    for name, (module, attr) in COMMANDS.items():
        if only in (None, name):
            built.command(name)(_member(module, attr))
    built.callback()(root)
    return built


def _command_word(argv: list[str]) -> str | None:
    """The command a command line names: its first word (the root's only option, --version,
    takes no value, so the first word that is not an option is the command). `--version`
    alone needs no command ("")."""
    word = next((a for a in argv if not a.startswith("-")), None)
    if word is None and "--version" in argv:
        return ""
    return word if word in GROUPS or word in COMMANDS else None


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole app, built once on first use
        whole = build()
        globals()["app"] = whole
        return whole
    raise AttributeError(name)


def main() -> None:
    from mlplatform.process_exit import fast_exit
    from mlplatform.process_start import raise_gc_thresholds

    raise_gc_thresholds()

    try:
        build(_command_word(sys.argv[1:]))()
    finally:
        fast_exit()
