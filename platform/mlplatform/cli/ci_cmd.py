"""`platformctl ci SPEC` (mlplatform.ci) and the CI workflow `platformctl init --ci` writes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlplatform.cli.dryrun_cmd import DEFAULT_SAMPLE
from mlplatform.cli.output import JsonOpt, console, err_console, fmt_duration, handle_errors, print_json
from mlplatform.errors import InputError
from mlplatform.settings import ENV_VARS, STORE_URL_KEYS

# The settings a workflow passes from the repository's secrets: the production platform.
WORKFLOW_SETTINGS = ("ray_address", *STORE_URL_KEYS, "s3_endpoint_url")
REPORT = Path("ci-report.xml")


def workflow(spec: Path, name: str) -> str:
    """The GitHub Actions workflow for a spec: `ci` on pull requests, `apply` on main."""
    env = "\n".join(f"  {ENV_VARS[k][0]}: ${{{{ secrets.{ENV_VARS[k][0]} }}}}" for k in WORKFLOW_SETTINGS)
    text = resources.files("mlplatform").joinpath("templates/github-ci.yml").read_text()
    return text.replace("{name}", name).replace("{spec}", spec.as_posix()).replace("{env}", env)


def write_workflow(spec: Path, name: str, root: Path, force: bool) -> Path:
    path = root / ".github" / "workflows" / f"mlplatform-{name}.yml"
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(workflow(spec, name))
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None
    return path


@handle_errors
def ci(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    junit: Annotated[Path, typer.Option("--junit", help="JUnit XML report to write.")] = REPORT,
    tests: Annotated[Path | None, typer.Option(
        "--tests", help="The pipeline's own tests (default: tests/ next to the spec, if there).",
        show_default=False)] = None,
    sample: Annotated[int, typer.Option("--sample", min=1,
                                        help="Rows of the dry-run's sample.")] = DEFAULT_SAMPLE,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No dry-run log lines.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Check SPEC and its code against the production platform: the spec and its code, the
    pipeline's own tests, the plan, and a dry-run in a scratch home. One exit code (0 passed;
    2 an invalid spec or code; 1 a failed stage) and a JUnit report."""
    from mlplatform.ci import run_ci
    from mlplatform.cli.output import settings_for

    settings = settings_for()

    def log(line: str) -> None:
        if not quiet:
            err_console.print(line, style="dim", highlight=False, markup=False, soft_wrap=True)

    report = run_ci(spec, settings, sample_rows=sample, tests=tests, log=log)
    try:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_bytes(report.junit())
    except OSError as exc:
        raise InputError(f"--junit {junit}: cannot write: {exc.strerror}") from None
    if json_:
        print_json({**report.model_dump(mode="json", exclude={"user_junit"}), "junit": str(junit)})
    else:
        table = Table("stage", "case", "outcome", "time", "message")
        for c in report.cases:
            colour = {"passed": "green", "failed": "red"}.get(c.outcome, "dim")
            table.add_row(c.stage, c.name, f"[{colour}]{c.outcome}[/]", fmt_duration(c.seconds),
                          c.message[:100])
        console.print(table)
        console.print(f"JUnit report: {junit}", highlight=False)
        if report.passed:
            console.print(f"[green]ci passed[/] in {report.seconds:.1f}s: {report.message}", highlight=False)
        else:
            err_console.print(f"[bold red]ci failed at {report.failed_stage}:[/] {report.message}",
                              highlight=False, soft_wrap=True)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
