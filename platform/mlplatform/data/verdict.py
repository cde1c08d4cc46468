"""Whether a validated batch may go on: the policy the validate step and `platformctl
validate` share (breaks and invalid rows stop a run; shift and drift are reported)."""

from __future__ import annotations

from typing import Any

from mlplatform.data.report import shift_line
from mlplatform.data.validation import ValidationResult
from mlplatform.spec import PipelineSpec


def verdict(result: ValidationResult, spec: PipelineSpec) -> list[str]:
    """Why the batch must not go on (empty: it may). A shift (values outside soft, inferred
    constraints) is never among them: it is not in `result.failures`."""
    policy = spec.validation
    reasons = []
    breaks = result.schema_breaks
    if breaks and policy.on_schema_break == "stop":
        reasons.append("schema break: " + "; ".join(
            f"{f.column}: {f.check} ({f.message})" for f in breaks))
    for f in result.failures:
        if f.level == "dataset":
            reasons.append(f"{f.column or 'dataset'}: {f.check}: {f.message}")
    if result.invalid_fraction > policy.max_invalid_fraction:
        worst = sorted((f for f in result.failures if f.level == "row"), key=lambda f: -f.failing)
        detail = ", ".join(f"{f.column} {f.check} ({f.failing})" for f in worst[:5])
        reasons.append(f"{result.invalid_fraction:.1%} of rows invalid, above "
                       f"{policy.max_invalid_fraction:.1%} (validation.max_invalid_fraction): {detail}")
    return reasons


def shift_summary(result: ValidationResult) -> dict[str, dict[str, Any]]:
    """Per shifted column: how many values lie outside its soft constraint, and where."""
    return {s.column: {"constraint": s.constraint, "expected": s.expected, "outside": s.outside,
                       "fraction": round(s.fraction, 4), "seen_min": s.seen_min, "seen_max": s.seen_max}
            for s in result.shifts if s.shifted}


def drift_alert(result: ValidationResult, ref_label: str) -> tuple[str, str] | None:
    """(severity, message) of the drift alert, naming drifted features and shifted columns;
    None when there is neither. A shift is alerted as drift: both are reasons to retrain,
    neither is a reason to stop."""
    drift = result.drift
    parts = []
    if drift is not None and drift.n_drifted:
        parts.append(f"drift on {', '.join(drift.drifted_features)} against {ref_label}")
    line = shift_line(result)
    if line:
        parts.append(line)
    if not parts:
        return None
    return ("critical" if drift is not None and drift.dataset_drift else "warning"), "; ".join(parts)
