"""A model with a bug that offline checks cannot see, for the demo's bad-model day and the
rollout tests: it answers batches correctly and fails on one-row inputs, as a model with a
reshape bug does. The offline gate (a batch holdout) and infra validation (a batch of
training rows) pass it; live traffic, one row per request, fails, and the canary's
success-rate guardrail rolls it back.
"""

from __future__ import annotations

from typing import Any

from sklearn.ensemble import HistGradientBoostingClassifier


class SingleRowBugClassifier(HistGradientBoostingClassifier):
    def _check_batch(self, X: Any) -> None:
        if len(X) == 1:
            raise ValueError("Expected 2D array with more than one sample, got 1 (the demo's injected bug)")

    def predict(self, X: Any) -> Any:
        self._check_batch(X)
        return super().predict(X)

    def predict_proba(self, X: Any) -> Any:
        self._check_batch(X)
        return super().predict_proba(X)
