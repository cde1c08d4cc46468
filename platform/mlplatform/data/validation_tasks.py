"""validate_parquet's pass on Ray: plain Ray tasks over the Parquet row groups, their
partials merged in file order as they finish (mlplatform.data.validation holds the checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mlplatform.data.block_checks import BlockPartial, CheckPlan
from mlplatform.data.validation import RowFilter, _fragment_check, _merge

# Rows a Ray task checks at least: consecutive row groups are batched up to this, so that a
# file of small row groups does not pay a task (scheduling, a partial to pickle and merge)
# per few thousand rows. Row groups are never split: one is the unit of memory.
TASK_ROWS = 200_000


def _work_items(items: list[dict[str, Any]], cpus: int) -> list[list[tuple[str, int]]]:
    """Row groups batched into tasks of at least TASK_ROWS rows (fewer when that would leave
    a CPU without a task), in file order."""
    target = min(TASK_ROWS, max(1, sum(i["rows"] for i in items) // max(cpus, 1)))
    work: list[list[tuple[str, int]]] = []
    rows = target
    for i in items:
        if rows >= target:
            work.append([])
            rows = 0
        work[-1].append((i["path"], i["row_group"]))
        rows += i["rows"]
    return work


def _check_fragments(shared: tuple[CheckPlan, Any, list[str], RowFilter | None],
                     fragments: list[tuple[str, int]]) -> BlockPartial:
    """One Ray task: its row groups one after another, merged into one partial."""
    check = _fragment_check(*shared)
    return _merge(check(path, group) for path, group in fragments)


_remote_check: Any = None


def on_ray(plan: CheckPlan, fs: Any, dictionary_columns: list[str], row_filter: RowFilter | None,
            items: list[dict[str, Any]]) -> Iterator[BlockPartial]:
    """The partials of all row groups from Ray tasks, in file order, as they finish.

    Plain tasks with num_cpus=1, at most two per CPU in flight, not a Ray Data map (issue 15's
    profile, 10M rows on 2 CPUs): Ray Data's operator resource reservation, on by default, ran
    the map one task at a time (1.1 cores busy; two at once with it off), and its streaming
    executor cost the driver 0.3 CPU-s where these tasks cost 0.1. Memory stays bounded: a
    task holds one row group at a time, and the driver at most 2 x CPUs partials (a finished
    one waits only for its predecessors, so the merge order, and with it every float and
    every sample list, is the same on every run)."""
    import ray

    global _remote_check
    if _remote_check is None:
        _remote_check = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_check_fragments)
    shared = ray.put((plan, fs, dictionary_columns, row_filter))  # once, not per task
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    work = _work_items(items, cpus)
    window = 2 * cpus  # one running and one queued per CPU: no CPU waits for the driver
    pending: dict[Any, int] = {}
    done: dict[int, BlockPartial] = {}
    submitted = merged = 0
    try:
        while merged < len(work):
            while submitted < len(work) and len(pending) + len(done) < window:
                pending[_remote_check.remote(shared, work[submitted])] = submitted
                submitted += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                done[pending.pop(ref)] = ray.get(ref)
            while merged in done:
                yield done.pop(merged)
                merged += 1
    finally:
        for ref in pending:  # a failed task or an abandoned pass: stop the rest
            ray.cancel(ref)
