"""Benchmark: the CPU a platform process spends importing what it needs, with the garbage
collector at the platform's thresholds (mlplatform.process_start) against CPython's
(700, 10, 10): the baseline, in the same run (issue 15).

    .venv/bin/python benchmarks/process_start.py              # 5 fresh interpreters per cell
    .venv/bin/python benchmarks/process_start.py --repeat 9

Each cell is a fresh interpreter that sets the thresholds and then imports what one kind of
platform process that raises them imports: a Serve replica or a deploy's build task
(`serve.app`), and a pipeline job's driver running its steps in its own process
(`mlplatform.pipeline` and the training search's module, which brings scikit-learn and
MLflow). Reported: the median user+system
CPU seconds of the import (resource.getrusage), the variants alternating per repeat.
Results: benchmarks/results/process_start.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mlplatform.process_start import THRESHOLDS

try:
    import _harness as h
except ImportError:  # run as `python -m benchmarks.process_start`
    from benchmarks import _harness as h

HERE = Path(__file__).resolve().parent
OUT_JSON = HERE / "results" / "process_start.json"
IMPORTS = {"Serve replica / build task": "serve.app",
           "job driver, steps in its process": "mlplatform.pipeline, mlplatform.training.local_search"}
VARIANTS = {"platform": THRESHOLDS, "CPython default (baseline)": (700, 10, 10)}
# The baseline holds CPython's thresholds even through `serve`'s own call to raise them.
PROBE = """import gc, json, resource
gc.set_threshold({thresholds})
if {hold}:
    gc.set_threshold = lambda *a: None
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
before = cpu()
import {modules}
print(json.dumps(cpu() - before))
"""


def _probe(modules: str, thresholds: tuple[int, int, int]) -> float:
    code = PROBE.format(thresholds=", ".join(map(str, thresholds)), modules=modules,
                        hold=thresholds != THRESHOLDS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cells: dict[str, dict[str, list[float]]] = {kind: {v: [] for v in VARIANTS} for kind in IMPORTS}
    for _ in range(args.repeat):
        for kind, modules in IMPORTS.items():
            for variant, thresholds in VARIANTS.items():
                cells[kind][variant].append(_probe(modules, thresholds))
    rows, results = [], {}
    for kind, by_variant in cells.items():
        med = {v: statistics.median(xs) for v, xs in by_variant.items()}
        base = med["CPython default (baseline)"]
        results[kind] = {"imports": IMPORTS[kind], "median_cpu_s": med, "runs_cpu_s": by_variant,
                         "ratio": med["platform"] / base}
        rows.append([kind, IMPORTS[kind], h.fmt_float(med["platform"]), h.fmt_float(base),
                     f"{med['platform'] / base:.2f}x"])
    h.print_table(f"import CPU of a fresh process, median of {args.repeat} (gc thresholds {THRESHOLDS} "
                  "vs CPython's (700, 10, 10))",
                  [("process", "left"), ("imports", "left"), ("platform CPU s", "right"),
                   ("baseline CPU s", "right"), ("ratio", "right")], rows)
    thresholds = {k: list(v) for k, v in VARIANTS.items()}
    h.write_json(OUT_JSON, {"machine": h.machine_info(), "thresholds": thresholds, "repeat": args.repeat,
                            "results": results})
    print(json.dumps({k: round(v["ratio"], 3) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
