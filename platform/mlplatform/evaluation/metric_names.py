"""The metrics the platform knows, by task, and which way each is better.

Apart from `metrics` (which computes them with scikit-learn) so that reading a spec, which
checks its metric names, does not import scikit-learn and SciPy: that import was 1-2.5 s of
every `platformctl submit` and of every job driver before its first step (issue 15).
"""

from __future__ import annotations

# Every metric the platform knows, with its direction (True: higher is better).
TASK_METRICS: dict[str, dict[str, bool]] = {
    "classification": {"roc_auc": True, "log_loss": False, "accuracy": True, "f1": True},
    "regression": {"rmse": False, "mae": False, "r2": True},
}


def greater_is_better(metric: str) -> bool:
    for metrics in TASK_METRICS.values():
        if metric in metrics:
            return metrics[metric]
    raise KeyError(f"unknown metric {metric!r}")
