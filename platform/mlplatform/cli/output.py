"""How every command talks: rich tables for people, `--json` for scripts, and
errors as one clear message (never a traceback) with a meaningful exit code."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from mlplatform.errors import PlatformError
from mlplatform.redact import redact_text
from mlplatform.settings import Settings, apply_ray_auth_env, load_settings

if TYPE_CHECKING:  # imported where a command asks for the services: SQLAlchemy and pyarrow
    from mlplatform.services import Services

# Rich assumes 80 columns when output is not a terminal; logs and CI are wider than that.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="Ray dashboard address (http://host:8265); "
                 "default: the local cluster, else RAY_ADDRESS.", show_default=False),
]

F = TypeVar("F", bound=Callable[..., Any])


def settings_for(address: str | None = None) -> Settings:
    settings = load_settings(address=address)
    apply_ray_auth_env(settings)
    return settings


def services_for(address: str | None = None) -> Services:
    """The platform's services for one CLI command (built from the effective settings)."""
    from mlplatform.services import Services

    return Services(settings_for(address))


def print_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    elif isinstance(data, list):
        data = [d.model_dump(mode="json", by_alias=True) if isinstance(d, BaseModel) else d
                for d in data]
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(exc: PlatformError) -> typer.Exit:
    # Messages quote what failed, which may be a store URL with its password: mask them all.
    err_console.print(f"[bold red]error:[/] {escape(redact_text(exc.message))}", highlight=False, markup=True,
                      soft_wrap=True)
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {escape(redact_text(exc.hint))}", highlight=False)
    return typer.Exit(exc.exit_code)


def handle_errors(fn: F) -> F:
    """Turn PlatformError into a message and its exit code; hide other tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PlatformError as exc:
            raise fail(exc) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: say so briefly; PLATFORM_DEBUG=1 shows the trace
            if os.environ.get("PLATFORM_DEBUG"):
                traceback.print_exc()
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {redact_text(str(exc))}",
                              highlight=False)
            err_console.print("[dim]set PLATFORM_DEBUG=1 for the traceback[/]")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"
