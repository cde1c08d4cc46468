"""`platformctl watch SPEC`, `platformctl watch --stop NAME` and `platformctl triggers NAME`.

Register in app.py with:
    app.command("watch")(watch_cmd.watch)
    app.command("triggers")(watch_cmd.triggers)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mlplatform.cli.output import AddressOpt, JsonOpt, console, handle_errors, print_json, settings_for
from mlplatform.errors import InputError
from mlplatform.spec_code import check_code, load_for
from mlplatform.triggers import claims


@handle_errors
def watch(
    spec: Annotated[Path | None, typer.Argument(help="Pipeline spec (YAML) with a `triggers` "
                                                "section.", show_default=False)] = None,
    stop: Annotated[str | None, typer.Option("--stop", help="Stop the watcher of this pipeline.",
                                             show_default=False)] = None,
    working_dir: Annotated[Path | None, typer.Option(help="Uploaded with the watcher and its runs "
                           "(default: the current folder).")] = None,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Start the pipeline's trigger loop on the cluster (a detached actor that outlives this
    command): new data, a schedule, drift or quality start runs by themselves."""
    from mlplatform.triggers.actor import start_watcher, stop_watcher

    settings = settings_for(address)
    if stop is not None:
        if spec is not None:
            raise InputError("give a SPEC to start a watcher or --stop NAME to stop one, not both")
        stopped = stop_watcher(settings, stop)
        if json_:
            print_json({"pipeline": stop, "stopped": stopped})
        else:
            console.print(f"stopped the watcher of {stop!r}" if stopped
                          else f"no watcher of {stop!r} is running")
        return
    if spec is None:
        raise InputError("SPEC: give the pipeline spec to watch (or --stop NAME)")
    loaded = load_for(spec, settings)
    if loaded.triggers is None:
        raise InputError(f"spec {spec}: no `triggers` section: nothing to watch",
                         hint="add e.g. `triggers: {new_data: true}` (see `platformctl init`)")
    check_code(loaded, settings, spec.parent)  # before any cluster work, as `submit` does
    started = start_watcher(settings, spec, loaded.name, working_dir=working_dir)
    if json_:
        print_json(started)
    else:
        console.print(started.message)


@handle_errors
def triggers(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest fires to show.")] = 20,
    address: AddressOpt = None,
    json_: JsonOpt = False,
) -> None:
    """What the pipeline's triggers fired, when and why, and the run each started (or why not)."""
    from mlplatform.services import Services

    store = Services(settings_for(address)).metadata
    fired = claims.fires(store, name, limit=limit)
    active = claims.active_run(store, name)
    if json_:
        print_json({"pipeline": name, "active_run": active.model_dump(mode="json") if active else None,
                    "fires": [f.model_dump(mode="json") for f in fired]})
        return
    if not fired:
        console.print(f"no trigger of {name!r} has fired")
    else:
        table = Table(title=f"triggers of {name}")
        for col in ("when (UTC)", "trigger", "status", "run", "job", "why"):
            table.add_column(col, overflow="fold")
        for f in fired:
            colour = {"submitted": "green", "skipped": "yellow", "failed": "red"}.get(f.status, "white")
            table.add_row(f.fired_at.isoformat(timespec="seconds"), f.trigger, f"[{colour}]{f.status}[/]",
                          f.run_id or "-", f.job_id or "-", escape(f.reason))
        console.print(table)
    if active is not None:
        console.print(f"active run: {active.run_id} ({active.cause}), job {active.job_id or '-'}")


# For tests and for registering: the two commands as one typer app.
app = typer.Typer(help="Triggers: the watcher and what it fired.", no_args_is_help=True)
app.command("watch")(watch)
app.command("triggers")(triggers)
