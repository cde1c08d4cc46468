"""`platformctl init`, `platformctl spec check`, `platformctl config show`."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.cli.output import JsonOpt, console, err_console, handle_errors, print_json
from mlplatform.errors import InputError
from mlplatform.redact import redact_url
from mlplatform.settings import load_settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_code import code_problems, load_for
from mlplatform.spec_loader import SpecError, validate_document

spec_app = typer.Typer(help="Pipeline specs.", no_args_is_help=True)
config_app = typer.Typer(help="The platform's configuration.", no_args_is_help=True)


def template(name: str, file: str) -> str:
    text = resources.files("mlplatform").joinpath("templates/pipeline.yaml").read_text()
    return text.format(name=name, file=file)


@handle_errors
def init(name: Annotated[str, typer.Argument(help="Pipeline name (lowercase, digits, - _).")],
         out: Annotated[Path | None, typer.Option(help="File to write (default NAME.yaml).")] = None,
         ci: Annotated[str | None, typer.Option("--ci", help="Also write a CI workflow that runs "
                       "`platformctl ci` on pull requests and `platformctl apply` on main: github.",
                       show_default=False)] = None,
         force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
         json_: JsonOpt = False) -> None:
    """Write a commented example pipeline spec to start from (and, with --ci, its CI workflow)."""
    if ci is not None and ci != "github":
        raise InputError(f"--ci {ci}: not a CI system the platform writes a workflow for; choose github")
    path = out or Path(f"{name}.yaml")
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    text = template(name, str(path))
    # The template must be a valid spec for this name before anything is written.
    validate_document(text, str(path), PipelineSpec,
                      {**os.environ, "PLATFORM_HOME": str(load_settings().home)})
    try:
        path.write_text(text)
    except OSError as exc:
        raise InputError(f"--out {path}: cannot write: {exc.strerror}") from None
    flow = None
    if ci is not None:
        from mlplatform.cli.ci_cmd import write_workflow

        flow = write_workflow(path, name, Path.cwd(), force)
    if json_:
        print_json({"written": str(path), "name": name, "workflow": str(flow) if flow else None})
    else:
        console.print(f"wrote {path}; check it with `platformctl spec check {path}`")
        if flow:
            console.print(f"wrote {flow}: `platformctl ci {path}` on pull requests, "
                          f"`platformctl apply {path} --wait` on main")


_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


def _field_of(problem: str) -> str:
    """The field a code problem names first ("model.params: ..."), for --json's `path`."""
    found = _FIELD.match(problem)
    return found.group(1) if found else ""


@spec_app.command("check")
@handle_errors
def check(file: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
          json_: JsonOpt = False) -> None:
    """Validate a spec: every problem with its YAML path and line; exit 2 if any."""
    settings = load_settings()
    try:
        spec = load_for(file, settings)
    except SpecError as exc:
        if json_:
            print_json({"valid": False, "file": str(file),
                        "errors": [i.model_dump(mode="json") for i in exc.issues]})
        else:
            err_console.print(f"[bold red]{file}: {len(exc.issues)} problem(s)[/]")
            for issue in exc.issues:
                err_console.print("  " + issue.render(str(file)), highlight=False, markup=False)
        raise typer.Exit(2) from None
    problems = code_problems(spec, settings, file.parent)  # the code it names, on the allow-lists
    if problems:
        if json_:
            print_json({"valid": False, "file": str(file),
                        "errors": [{"path": _field_of(p), "message": p} for p in problems]})
        else:
            err_console.print(f"[bold red]{file}: {len(problems)} problem(s)[/]")
            for p in problems:
                err_console.print(f"  {p}", highlight=False, markup=False)
        raise typer.Exit(2)
    if json_:
        print_json({"valid": True, "file": str(file),
                    "spec": spec.model_dump(mode="json", by_alias=True)})
    else:
        console.print(f"[green]{file}: valid[/] (pipeline {spec.name!r}, source {spec.source.path})")


@config_app.command("show")
@handle_errors
def show(json_: JsonOpt = False) -> None:
    """The effective settings and where each value came from (passwords masked)."""
    s = load_settings()
    values = {k: redact_url(str(v)) if v is not None else None
              for k, v in s.model_dump(exclude={"sources"}).items()}
    if json_:
        print_json({"settings": values, "sources": s.sources})
        return
    table = Table("setting", "value", "from")
    for key, value in values.items():
        table.add_row(key, value or "-", s.sources.get(key, "default"))
    console.print(table)
