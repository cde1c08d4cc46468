"""`platformctl monitor NAME`: the live terminal view (mlplatform.monitoring.live_view)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from mlplatform.cli.output import JsonOpt, console, handle_errors, print_json, services_for
from mlplatform.errors import InputError


def register(app: typer.Typer) -> None:
    """Add `show` (the group's default command: `monitor NAME`) to the monitor group."""

    @app.command("show")
    @handle_errors
    def show(
        name: Annotated[str, typer.Argument(help="The pipeline.")],
        window: Annotated[str, typer.Option(help="Traffic over this last stretch: 90s, 5m, 1h.")] = "5m",
        interval: Annotated[float, typer.Option(help="Seconds between redraws.")] = 5.0,
        once: Annotated[bool, typer.Option("--once", help="Draw once and exit.")] = False,
        json_: JsonOpt = False,
    ) -> None:
        """The live view: served versions and weights, request rate, error rate, p50/p99, live quality (realised and estimated), drifted features and recent alerts, redrawn until Ctrl-C; --json prints one snapshot."""  # noqa: E501 - one line: typer shows a docstring's line breaks
        from rich.live import Live

        from mlplatform.monitoring.live_view import render, snapshot
        from mlplatform.spec_types import _check_duration, duration_seconds

        try:
            window_s = float(duration_seconds(_check_duration(window) or ""))
        except ValueError as exc:
            raise InputError(f"--window {window!r}: {exc}") from None
        if interval <= 0:
            raise InputError(f"--interval {interval}: must be > 0 seconds")
        services = services_for()
        if name not in services.metadata.pipelines():
            known = ", ".join(services.metadata.pipelines()) or "none"
            raise InputError(f"pipeline {name!r}: no runs recorded (known: {known})")
        if json_:
            print_json(snapshot(services, name, window_s=window_s))
            return
        if once or not console.is_terminal:
            console.print(render(snapshot(services, name, window_s=window_s)))
            return
        with Live(render(snapshot(services, name, window_s=window_s)), console=console,
                  refresh_per_second=1, screen=False) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(render(snapshot(services, name, window_s=window_s)))
            except KeyboardInterrupt:
                pass
