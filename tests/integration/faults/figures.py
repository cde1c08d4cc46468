"""The fault tests' figures: printed past pytest's capture (so a plain `pytest` run shows
them) and, when PLATFORM_FAULT_FIGURES names a file, appended to it as JSON lines for CI
logs and the closing note."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def report(capsys: pytest.CaptureFixture[str], fault: str, **figures: Any) -> None:
    line = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    with capsys.disabled():
        print(f"\n[fault] {fault}: {line}")
    path = os.environ.get("PLATFORM_FAULT_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"fault": fault, **figures}) + "\n")
