"""Request metrics of a serving replica, exported by Ray's metrics agent.

`ray.serve.metrics` instruments add the deployment, replica and application tags; the
platform adds pipeline, version and variant (champion, challenger, shadow, pinned,
validation), so that a dashboard shows each model and variant apart. The definitions (names,
tags, bucket boundaries) are shared with the pipeline metrics in
mlplatform.monitoring.metrics, whose METRIC_NAMES lists them all. Ray's own `serve_*`
metrics (HTTP requests, the proxy's latency, queued queries) are not repeated: these count
what only the platform knows (which version and variant answered, what it predicted, why a
request failed).

The request path stays cheap: the instruments are created once per replica, the tag dicts
once per (version, variant), and a large batch observes at most `_OBSERVED_ROWS` rows of
its prediction distribution (evenly spread), since each observation is a call into Ray's
recorder. Recording never fails a request: an error here is logged once and ignored.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from mlplatform.monitoring.metrics import SERVE_INSTRUMENTS, Instrument
from serve.hosting import Prediction

log = logging.getLogger("mlplatform.serve")

_OBSERVED_ROWS = 256
_CLASSES = 50  # distinct class labels counted per version; more would make series without bound
UNKNOWN = "unknown"  # version / variant of a request refused before a version was chosen
_COUNTED = "_mlplatform_counted"  # set on an exception already counted (a model error)


def error_kind(exc: BaseException) -> str:
    """The `kind` tag of a failed request, from what the route raised."""
    from mlplatform.errors import StoreUnavailable
    from serve.protocols import RequestError

    if isinstance(exc, RequestError):
        return {404: "not_found", 413: "too_large", 503: "unavailable"}.get(
            exc.status, "bad_request" if exc.status < 500 else "internal")
    if isinstance(exc, StoreUnavailable):
        return "unavailable"
    from starlette.requests import ClientDisconnect

    if isinstance(exc, ClientDisconnect):  # the client went away mid-body: answered 400, not ours
        return "bad_request"
    return "internal"


def _make(inst: Instrument) -> Any:
    from ray.serve import metrics as sm

    if inst.kind == "counter":
        return sm.Counter(inst.name, inst.description, inst.tag_keys)
    if inst.kind == "gauge":
        return sm.Gauge(inst.name, inst.description, inst.tag_keys)
    return sm.Histogram(inst.name, inst.description, list(inst.boundaries), inst.tag_keys)


class ServeMetrics:
    """One replica's instruments, tagged with its pipeline."""

    def __init__(self, pipeline: str):
        self.pipeline = pipeline
        self.ok = False
        self._tags: dict[tuple[str, str], dict[str, str]] = {}
        self._warned = False
        try:
            made = {i.name.removeprefix("mlplatform_serve_"): _make(i) for i in SERVE_INSTRUMENTS}
            self.requests, self.errors = made["requests"], made["errors"]
            self.latency, self.predictions = made["latency_ms"], made["predictions"]
            self.score, self.value, self.classes = made["score"], made["prediction_value"], made["class"]
            self.ok = True
        except Exception as exc:  # noqa: BLE001 - e.g. outside a replica in a test: no metrics
            log.warning("serving metrics are off: %s", exc)

    def _base(self, version: str, variant: str) -> dict[str, str]:
        tags = self._tags.get((version, variant))
        if tags is None:
            tags = {"pipeline": self.pipeline, "version": version, "variant": variant}
            self._tags[(version, variant)] = tags
        return tags

    def _failed_once(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("a serving metric was not recorded: %s", exc)

    def answered(self, version: str, variant: str, pred: Prediction, latency_ms: float) -> None:
        """A request (or its rows for one version) answered: count it, its latency and what it
        predicted."""
        if not self.ok:
            return
        try:
            tags = self._base(version, variant)
            self.requests.inc(1, {**tags, "outcome": "ok"})
            self.latency.observe(float(latency_ms), tags)
            n = len(pred.outputs)
            if n == 0:
                return
            self.predictions.inc(n, tags)
            pick = (slice(None) if n <= _OBSERVED_ROWS
                    else np.linspace(0, n - 1, _OBSERVED_ROWS).astype(int))
            scores = pred.score()
            if pred.classes is not None:
                labels, counts = np.unique(np.asarray(pred.outputs), return_counts=True)
                for label, count in zip(labels[:_CLASSES], counts[:_CLASSES], strict=False):
                    self.classes.inc(int(count), {**tags, "class": str(label)})
                if scores is not None:
                    for s in np.asarray(scores, dtype=float)[pick]:
                        self.score.observe(float(s), tags)
            else:
                values = np.asarray(pred.outputs)
                if values.dtype.kind in "iuf":
                    for v in values.astype(float)[pick]:
                        self.value.observe(float(v), tags)
        except Exception as exc:  # noqa: BLE001 - never fail a request for a metric
            self._failed_once(exc)

    def failed(self, version: str, variant: str, kind: str, latency_ms: float) -> None:
        """A request that was not answered: counted by kind, and its time to fail."""
        if not self.ok:
            return
        try:
            tags = self._base(version, variant)
            self.requests.inc(1, {**tags, "outcome": "error"})
            self.errors.inc(1, {**tags, "kind": kind})
            self.latency.observe(float(latency_ms), tags)
        except Exception as exc:  # noqa: BLE001
            self._failed_once(exc)

    def model_error(self, version: str, variant: str, exc: Exception, latency_ms: float) -> None:
        """The model raised: counted here with its version; the route's `metered` skips it."""
        self.failed(version, variant, "model_error", latency_ms)
        try:
            setattr(exc, _COUNTED, True)
        except Exception:  # noqa: BLE001 - an exception type without attributes: counted twice
            pass


def metered(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Count a prediction route's refusals (bad request, unknown version, too large, no model
    yet) and unexpected failures by kind. Goes under `answers`, which turns them into 4xx/5xx
    answers; the request's version is not known yet, so they are tagged `unknown`."""

    @functools.wraps(handler)
    async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await handler(self, *args, **kwargs)
        except Exception as exc:
            if not getattr(exc, _COUNTED, False):
                self.metrics.failed(UNKNOWN, UNKNOWN, error_kind(exc), (time.perf_counter() - t0) * 1000)
            raise

    return call
