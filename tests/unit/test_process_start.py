"""A Serve replica or an application's build task collects garbage at raised thresholds
(mlplatform.process_start) from its first import of ours, before the application's heavy
imports. The truth is a fresh interpreter's `gc.get_threshold()` against CPython's
(700, 10, 10) and what it has imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CPYTHON = (700, 10, 10)


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_serve_replica_raises_them_before_its_imports() -> None:
    got = _fresh("""
import gc, json, sys
import serve
threshold = gc.get_threshold()
print(json.dumps({"threshold": threshold, "pandas_loaded": "pandas" in sys.modules}))
""")
    assert got["threshold"][0] > CPYTHON[0] * 10
    assert not got["pandas_loaded"]  # raised before serve.app's heavy imports, not after
