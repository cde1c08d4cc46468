"""How a platform process starts: the garbage collector's thresholds while it imports.

CPython runs a young collection every 700 net allocations (`gc.get_threshold()` is
(700, 10, 10)), and a platform process allocates millions of long-lived objects importing
pandas, scikit-learn, MLflow, Ray and FastAPI, so it keeps re-scanning them.
benchmarks/process_start.py, median CPU of the import in a fresh interpreter on 2 cores
(issue 15):

    imports                                               (700, 10, 10)   THRESHOLDS
    serve.app (a Serve replica, a deploy's build task)    1.54 CPU s      1.23 (0.80x)
    mlplatform.pipeline + training.local_search (driver)  1.69            1.47 (0.87x)

and in the test suite's two worker processes the collector took 14.3 of ~90 CPU s over
the unit and fuzz tests, 4.0 with these thresholds. Objects freed by reference counting
(nearly all) are freed at once as before; only garbage held in reference cycles waits
longer: a young collection every 10,000 allocations instead of 700, a full one at most a
hundredth as often. Each process calls this first: `platformctl`, a pipeline job's driver,
the node's warm process, a dry-run's scratch process, and a Serve replica and its build task
(serve/__init__.py). Python offers no environment variable for this.

A pipeline job's other Ray workers (its tasks, trials and actors) keep CPython's: the job's
runtime_env `worker_process_setup_hook` would reach them, but whole-suite runs with and
without it differed by less than this machine's run-to-run spread, so it was left out.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 100)


def raise_gc_thresholds() -> None:
    """Apply THRESHOLDS to this process; a no-op where they are already at least as high."""
    now = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(now, THRESHOLDS, strict=True)))
