"""Benchmark: how long `platformctl` takes to answer, interpreter start to exit, for commands
that do little besides starting (issue 15: the CLI's share of a small run's latency).

    .venv/bin/python benchmarks/cli_start.py                  # 5 runs per command and variant
    .venv/bin/python benchmarks/cli_start.py --repeat 9

Variants, in the same run, alternating per repeat:
- `platformctl`: the console script, which imports only the module of the command it runs
  (mlplatform.cli.app.main);
- `whole app`: the same command through the app with every command module imported first
  (`mlplatform.cli.app.app`), which is what every invocation paid before: the baseline.

Commands: `--version`; `submit --help`; `spec check` of the demo spec (which imports the named
scikit-learn estimator to check it). Each must exit 0. Medians per command and variant.
Results: benchmarks/results/cli_start.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.cli_start`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT_JSON = HERE / "results" / "cli_start.json"
COMMANDS = (["--version"], ["submit", "--help"], ["spec", "check", "jobs/examples/demo.yaml"])
WHOLE_APP = ("import sys; from mlplatform.cli.app import app; sys.argv[0] = 'platformctl'; "
             "app(prog_name='platformctl')")


def _variants(args: list[str]) -> dict[str, list[str]]:
    return {"platformctl": [str(Path(sys.executable).parent / "platformctl"), *args],
            "whole app": [sys.executable, "-c", WHOLE_APP, *args]}


def _timed(cmd: list[str]) -> float:
    began = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    times: dict[str, dict[str, list[float]]] = {}
    for command in COMMANDS:
        label = " ".join(command)
        times[label] = {name: [] for name in _variants(command)}
        for cmd in _variants(command).values():
            _timed(cmd)  # untimed: the page cache warm for both
        for _ in range(args.repeat):
            for name, cmd in _variants(command).items():
                times[label][name].append(_timed(cmd))
    rows, results = [], []
    for label, by in times.items():
        lazy, whole = statistics.median(by["platformctl"]), statistics.median(by["whole app"])
        results.append({"command": label, "platformctl_s": lazy, "whole_app_s": whole,
                        "runs": by, "ratio": lazy / whole})
        rows.append([f"platformctl {label}", h.fmt_float(lazy), h.fmt_float(whole), f"{lazy / whole:.2f}x",
                     f"{min(by['platformctl']):.2f}-{max(by['platformctl']):.2f}"])
    h.write_json(OUT_JSON, {"benchmark": "cli_start", "repeat": args.repeat, "machine": h.machine_info(),
                            "results": results})
    h.print_table(f"platformctl start to exit, median of {args.repeat} (s)",
                  [("command", "left"), ("platformctl", "right"), ("whole app (baseline)", "right"),
                   ("ratio", "right"), ("platformctl range", "right")], rows,
                  caption=f"results: {OUT_JSON}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
