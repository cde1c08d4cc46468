"""Where a step's work runs: in the job's own process below a measured input size, on the
cluster above it.

Ray Data and Tune pay a fixed cost per use that has nothing to do with the data: Ray Data
plans, schedules and reports a streaming execution even for one block, and Tune starts
trial actors, a controller and per-trial checkpointing. On 2 cores that cost was 1-5 s per
step (issue 15's profile: a day of 4,000 rows took 5.0 s to ingest, 2.4 s to validate and
16.2 s to train four trials, where one process does each in about a second). Below the
thresholds here a step runs the same per-block functions (the checks, the statistics, the
transformations, the trials) in the job's own process; above them, as Ray tasks. The results
go to the storage URI either way, so no later step can tell where one ran.

The thresholds are measured by `benchmarks/placement.py` (local vs cluster per step and
size, on 2 cores) and overridable per pipeline in the spec:

    execution:
      placement: auto        # auto | local | cluster
      local_max_rows:        # per step, replaces the measured threshold
        train: 500000
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from mlplatform.spec import ExecutionSpec

# Inputs up to this many rows run in the job's own process. benchmarks/placement.py on the
# 2-core machine (seconds, local vs cluster; measured with other work on the machine, load 3-4):
# - ingest (read + one snapshot part): 10k 0.05/1.28, 100k 0.15/1.75, 1M 0.57/2.62, 2M 1.66/3.17.
#   Local wins at every size; the bound is memory (the batch is one table in the driver, ~150 B
#   per demo row: 2M rows ~300 MB).
# - validate (and training_set's statistics, the same pass): 10k 0.01/0.02, 1M 0.34/1.58,
#   2M 0.96/0.69: the cluster's two workers win from ~1.5M rows. Local streams row groups, so
#   memory is no bound.
# - featurize (transformation + window aggregations): 10k 0.14/1.14, 100k 0.67/2.60,
#   1M 10.4/11.5, 2M 19.1/23.7. The aggregations dominate either way; the bound is memory.
# - train (4 trials of HistGradientBoosting + the final fit, in-process vs Tune): 10k 1.06/4.18,
#   50k 2.54/5.70, 200k 6.69/9.47. Tune's actors, controller and checkpoints cost ~3 s; above
#   ~200k rows two trials at once on the cluster start to repay it.
LOCAL_MAX_ROWS: dict[str, int] = {
    "ingest": 2_000_000,
    "validate": 1_000_000,
    "featurize": 1_000_000,
    "training_set": 1_000_000,
    "train": 200_000,
}

PlacedStep = Literal["ingest", "validate", "featurize", "training_set", "train"]


class Placement(BaseModel):
    """Where one step ran and why: recorded in the step's summary (`execution`)."""

    step: str
    placement: Literal["local", "cluster"]
    rows: int
    threshold_rows: int
    reason: str

    @property
    def local(self) -> bool:
        return self.placement == "local"

    def summary(self) -> dict[str, Any]:
        return self.model_dump()

    def line(self) -> str:
        return f"runs {'in this process' if self.local else 'on the cluster'} ({self.reason})"


def place(execution: ExecutionSpec | None, step: PlacedStep, rows: int, *, setting: str = "auto",
          cluster_only: str | None = None) -> Placement:
    """Choose where `step` runs for an input of `rows` rows. The spec's execution.placement
    wins; left at auto, the installation's `placement` setting (PLATFORM_PLACEMENT) decides.
    `cluster_only` names a reason the work needs the cluster whatever its size (e.g. ASHA,
    which only Tune implements)."""
    mode = execution.placement if execution is not None else "auto"
    said = f"execution.placement: {mode}"
    if mode == "auto" and setting != "auto":
        mode, said = setting, f"PLATFORM_PLACEMENT={setting}"
    overrides = execution.local_max_rows if execution is not None else {}
    threshold = int(overrides.get(step, LOCAL_MAX_ROWS[step]))
    source = "execution.local_max_rows" if step in overrides else "measured threshold"

    def at(where: Literal["local", "cluster"], reason: str) -> Placement:
        return Placement(step=step, placement=where, rows=int(rows), threshold_rows=threshold, reason=reason)

    if cluster_only:
        return at("cluster", cluster_only)
    if mode in ("local", "cluster"):
        return at(mode, said)  # type: ignore[arg-type]
    if rows <= threshold:
        return at("local", f"{rows:,} rows <= {threshold:,}, the {source}")
    return at("cluster", f"{rows:,} rows > {threshold:,}, the {source}")
