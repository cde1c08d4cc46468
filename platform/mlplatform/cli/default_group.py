"""A typer group whose default command takes the place of an unknown first word.

`platformctl monitor NAME` is the live view and `platformctl monitor drift NAME` a check: click
groups cannot mix a positional argument with subcommands, so this group routes any first argument
that is not one of its commands (nor an option) to the default command, as click-default-group
does (a dependency not worth taking for one method).
"""

from __future__ import annotations

from typing import Any

import click
from typer.core import TyperGroup


class DefaultCommandGroup(TyperGroup):
    default_command = "show"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: Any) -> None:
        formatter.write_usage(ctx.command_path, f"NAME [OPTIONS] | COMMAND [ARGS]... (default: "
                                                f"{self.default_command})")
