"""`platformctl` imports only the module of the command it runs: each command resolves on its
own, and a command line names the command it means."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlplatform import __version__
from mlplatform.cli.app import COMMANDS, GROUPS, _command_word, build


@pytest.mark.parametrize("words", [[name] for name in [*GROUPS, *COMMANDS]] + [["config", "check"]],
                         ids=lambda w: " ".join(w))
def test_each_command_runs_from_an_app_built_for_it_alone(words: list[str]) -> None:
    alone = build(words[0])
    names = [c.name for c in alone.registered_commands] + [g.name for g in alone.registered_groups]
    assert names == [words[0]]  # no other command's module was needed
    result = CliRunner().invoke(alone, [*words, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: platformctl {' '.join(words)}" in " ".join(result.output.split())


def test_the_whole_app_has_every_command() -> None:
    result = CliRunner().invoke(build(), ["--help"])
    assert result.exit_code == 0
    for name in [*GROUPS, *COMMANDS]:
        assert f"│ {name} " in result.output, name


@pytest.mark.parametrize(("argv", "word"), [
    (["submit", "spec.yaml", "--wait"], "submit"),
    (["models", "list", "--json"], "models"),
    (["--version"], ""),
    (["spec.yaml"], None),  # not a command: the whole app answers "no such command"
    ([], None),
])
def test_the_command_word_of_a_command_line(argv: list[str], word: str | None) -> None:
    assert _command_word(argv) == word


def test_the_console_script_dispatches() -> None:
    exe = Path(sys.executable).parent / "platformctl"
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"platformctl {__version__}"
    unknown = subprocess.run([str(exe), "sumbit"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "No such command 'sumbit'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
