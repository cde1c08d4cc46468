"""`platformctl config check`: connect to every configured store and say, per setting, ok or
why not (passwords masked). Exit 1 when any store cannot be used from here: the environment,
not the input, is what to fix."""

from __future__ import annotations

import typer
from rich.table import Table

from mlplatform.cli.output import JsonOpt, console, err_console, handle_errors, print_json
from mlplatform.cli.spec_cmd import config_app
from mlplatform.settings import load_settings
from mlplatform.store_checks import check_stores


@config_app.command("check")
@handle_errors
def check(json_: JsonOpt = False) -> None:
    """Connect to each store (metadata, MLflow, storage, online) and report ok or the error."""
    results = check_stores(load_settings())
    failed = [r for r in results if not r.ok]
    if json_:
        print_json({"ok": not failed, "stores": [r.model_dump() for r in results]})
    else:
        table = Table("setting", "variable", "value", "status", "detail")
        for r in results:
            table.add_row(r.setting, r.variable, r.value, "[green]ok[/]" if r.ok else "[red]error[/]",
                          r.detail)
        console.print(table)
        for r in failed:
            err_console.print(f"[bold red]error:[/] {r.setting} ({r.variable}) {r.value}: {r.detail}",
                              highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)
