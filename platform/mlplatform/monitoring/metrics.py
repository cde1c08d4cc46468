"""Platform metrics for Prometheus, exported by Ray's metrics agent.

Two families:

* **pipeline and monitor metrics** (step durations and outcomes, rows in / valid /
  quarantined, runs by cause, live drift and live quality): recorded through the functions
  below from wherever the event happens: a job's driver, the CLI, the trigger watcher.
* **serving metrics** (requests, errors, latency, predictions): recorded in the Serve
  replicas by `serve.metrics` with `ray.serve.metrics`, which adds the deployment, replica
  and application tags. Their definitions live here too, so that `METRIC_NAMES` lists every
  name the platform exports (the Grafana dashboard's test checks its queries against it).

Why a detached actor owns the pipeline instruments (measured on Ray 2.60, local cluster,
tests/integration/test_metrics.py): a `ray.util.metrics` instrument lives in the process that
records it. A driver that records and exits does get its value exported (Ray flushes at
exit), but as a series of its own, labelled with the driver's WorkerId: every job run adds
series that start at their final value and never change, which `rate()` / `increase()`
cannot see (they need two samples of one series) and whose number grows with every run.
So the record functions send each value, fire-and-forget, to one detached, named actor
("mlplatform-metrics" in namespace "mlplatform", num_cpus=0) that holds the instruments for
the cluster's lifetime: one series per tag set, increments visible to rate(). A value
recorded by a driver that exits at once was on the endpoint ~9 s later (Ray's report interval
is ~10 s). Killing the actor resets its counters, which Prometheus handles like any process
restart. At the process's exit the last call is waited for (a few seconds at most) so that a
call not yet handed over is not lost. Ray 2.60 also drops a gauge from the endpoint ~20 s
after it was last set, so the actor sets its gauges again every few seconds. The actor's
class is built from `ray` alone (no import of mlplatform in its worker), so it starts in any
runtime environment.

Every function here never raises: metrics are a courtesy and must never fail a run. Without
Ray initialised in this process the values wait in a small buffer and go out on the first
call after Ray is up (a pipeline's first step may run before anything connects); a process
that never connects drops them with a debug log.
"""

from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

log = logging.getLogger(__name__)

NAMESPACE = "mlplatform"  # the platform's detached actors (rollout runners, the watcher) live here
ACTOR_NAME = "mlplatform-metrics"
_EXIT_WAIT_S = 5.0
_BUFFER = 1000  # values kept while Ray is not initialised; older ones are dropped first
# Ray 2.60 exports a gauge's value only for about two report intervals after it was set (~20 s
# measured; counters and histograms stay): the sink sets each gauge again every few seconds,
# so that a value set once (the last batch's rows, a live-drift score computed every 10
# minutes) stays on the endpoint. A value not set again for a week is let go (a version no
# longer served, a pipeline removed).
_GAUGE_REFRESH_S = 5.0
_GAUGE_KEEP_S = 7 * 24 * 3600.0

Kind = Literal["counter", "gauge", "histogram"]


class Instrument(NamedTuple):
    """One metric as declared to Ray (its name without Ray's `ray_` prefix)."""

    kind: Kind
    name: str
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


# Seconds: quick steps (validate a small batch) to hour-long training.
STEP_BOUNDARIES_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Milliseconds: one in-process model is ~1 ms, the Serve proxy adds ~5-10 ms, an overloaded
# replica queues for seconds (REFERENCES.md: measured on 2 cores).
LATENCY_BOUNDARIES_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                         10000.0)
# Classifier scores live in [0, 1]: deciles.
SCORE_BOUNDARIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Regression outputs have no common scale: a 1-2-5 series over twelve decades. Ray's
# histograms take positive boundaries only, so negative outputs all count in the first bucket.
VALUE_BOUNDARIES = tuple(m * 10.0 ** e for e in range(-3, 6) for m in (1.0, 2.0, 5.0))

PIPELINE_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("histogram", "mlplatform_step_duration_seconds",
               "Duration of a pipeline step's execution, by outcome", ("pipeline", "step", "status"),
               STEP_BOUNDARIES_S),
    Instrument("counter", "mlplatform_steps", "Pipeline step executions, by outcome",
               ("pipeline", "step", "status")),
    Instrument("counter", "mlplatform_rows", "Rows validated: kind = in | valid | quarantined",
               ("pipeline", "kind")),
    Instrument("gauge", "mlplatform_batch_rows", "Rows of the last validated batch, by kind",
               ("pipeline", "kind")),
    Instrument("counter", "mlplatform_runs", "Finished pipeline runs, by cause and status",
               ("pipeline", "cause", "status")),
    Instrument("gauge", "mlplatform_live_drift_score",
               "Drift score of a feature in served traffic vs the champion's training data",
               ("pipeline", "version", "feature")),
    Instrument("gauge", "mlplatform_live_drift_detected", "1 when a feature of served traffic drifted",
               ("pipeline", "version", "feature")),
    Instrument("gauge", "mlplatform_live_quality",
               "Live model quality over the monitoring window: kind = realised (feedback) | estimated",
               ("pipeline", "version", "variant", "metric", "kind")),
)

SERVE_TAGS = ("pipeline", "version", "variant")
SERVE_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("counter", "mlplatform_serve_requests",
               "Prediction requests answered by a replica: outcome = ok | error", (*SERVE_TAGS, "outcome")),
    Instrument("counter", "mlplatform_serve_errors",
               "Failed prediction requests: kind = bad_request | not_found | too_large | "
               "unavailable | model_error | internal", (*SERVE_TAGS, "kind")),
    Instrument("histogram", "mlplatform_serve_latency_ms",
               "Time a replica spent on a prediction request, in milliseconds", SERVE_TAGS,
               LATENCY_BOUNDARIES_MS),
    Instrument("counter", "mlplatform_serve_predictions", "Rows predicted", SERVE_TAGS),
    Instrument("histogram", "mlplatform_serve_score",
               "Classifier scores (probability of the positive / top class) per row", SERVE_TAGS,
               SCORE_BOUNDARIES),
    Instrument("histogram", "mlplatform_serve_prediction_value", "Regression outputs per row",
               SERVE_TAGS, VALUE_BOUNDARIES),
    Instrument("counter", "mlplatform_serve_class", "Predicted classes per row (class shares)",
               (*SERVE_TAGS, "class")),
)

RAY_PREFIX = "ray_"


def prometheus_names(inst: Instrument) -> list[str]:
    """The series names Ray 2.60's agent exports for `inst`: the `ray_` prefix; counters with
    Prometheus' `_total`; histograms as `_bucket`, `_sum` and `_count` (checked on a live
    endpoint by tests/integration/test_metrics.py)."""
    base = RAY_PREFIX + inst.name
    if inst.kind == "counter":
        return [base + "_total"]
    if inst.kind == "histogram":
        return [base + "_bucket", base + "_sum", base + "_count"]
    return [base]


METRIC_NAMES: list[str] = [n for inst in (*PIPELINE_INSTRUMENTS, *SERVE_INSTRUMENTS)
                           for n in prometheus_names(inst)]

# -- sending ------------------------------------------------------------------------------

_lock = threading.Lock()
_handle: Any = None
_handle_job: str | None = None
_last_ref: Any = None
_waiting: collections.deque[tuple[str, float, dict[str, str]]] = collections.deque(maxlen=_BUFFER)
_exit_hook = False


def _actor_class() -> Any:
    """The sink's class, built here so that cloudpickle ships it by value (ray only)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
    class MetricsSink:
        def __init__(self, instruments: list[tuple[str, str, str, tuple[str, ...], tuple[float, ...]]],
                     refresh_s: float, keep_s: float):
            import threading
            import time

            from ray.util import metrics as m

            self.instruments: dict[str, Any] = {}
            # Gauge values to set again and again (see _GAUGE_REFRESH_S): (name, tags) -> (value, set at)
            self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, float]] = {}
            self.lock = threading.Lock()
            self.time = time.monotonic
            for kind, name, description, tag_keys, boundaries in instruments:
                if kind == "counter":
                    self.instruments[name] = m.Counter(name, description, tag_keys)
                elif kind == "gauge":
                    self.instruments[name] = m.Gauge(name, description, tag_keys)
                else:
                    self.instruments[name] = m.Histogram(name, description, list(boundaries), tag_keys)
            threading.Thread(target=self._refresh, args=(refresh_s, keep_s), name="gauges",
                             daemon=True).start()

        def _refresh(self, every: float, keep: float) -> None:
            import time

            while True:
                time.sleep(every)
                with self.lock:
                    now = self.time()
                    for key, (value, at) in list(self.gauges.items()):
                        if now - at > keep:
                            del self.gauges[key]
                            continue
                        try:
                            self.instruments[key[0]].set(value, dict(key[1]))
                        except Exception:  # noqa: BLE001
                            del self.gauges[key]

        def record(self, values: list[tuple[str, float, dict[str, str]]]) -> int:
            done = 0
            for name, value, tags in values:
                inst = self.instruments.get(name)
                if inst is None:
                    continue
                try:
                    if hasattr(inst, "inc"):
                        if value > 0:
                            inst.inc(value, tags)
                    elif hasattr(inst, "observe"):
                        inst.observe(value, tags)
                    else:
                        with self.lock:
                            inst.set(value, tags)
                            self.gauges[(name, tuple(sorted(tags.items())))] = (value, self.time())
                    done += 1
                except Exception:  # noqa: BLE001 - one bad value never loses the others
                    pass
            return done

        def ping(self) -> bool:
            return True

    return MetricsSink


def _sink() -> Any:
    """This driver's handle on the sink, created on first use (get_if_exists: one per cluster,
    whoever comes first). Cached per Ray job: a re-init invalidates it."""
    global _handle, _handle_job
    import ray

    job = ray.get_runtime_context().get_job_id()
    if _handle is None or _handle_job != job:
        specs = [tuple(i) for i in PIPELINE_INSTRUMENTS]
        # The instruments' hash in the name: a sink made by an older release (other instruments)
        # is never reused, where it would drop the names it does not know.
        digest = hashlib.sha1(repr(specs).encode()).hexdigest()[:8]
        _handle = _actor_class().options(
            name=f"{ACTOR_NAME}-{digest}", namespace=NAMESPACE, lifetime="detached",
            get_if_exists=True).remote(specs, _GAUGE_REFRESH_S, _GAUGE_KEEP_S)
        _handle_job = job
    return _handle


def _emit(name: str, value: float, tags: dict[str, str]) -> None:
    global _last_ref, _handle, _exit_hook
    try:
        import ray

        with _lock:
            _waiting.append((name, float(value), {k: str(v) for k, v in tags.items()}))
            if not ray.is_initialized():
                return
            batch = list(_waiting)
            _waiting.clear()
            try:
                _last_ref = _sink().record.remote(batch)
            except Exception:
                _handle = None  # e.g. the sink was killed: the next call creates it again
                raise
            if not _exit_hook:
                atexit.register(_flush_at_exit)  # after ray.init's own hook: runs before ray.shutdown
                _exit_hook = True
    except Exception as exc:  # noqa: BLE001 - metrics never fail the caller
        log.debug("metric %s not recorded: %s", name, exc)


def flush(timeout_s: float = _EXIT_WAIT_S) -> bool:
    """Wait until the sink has the values sent so far. True when it has (or nothing was sent)."""
    try:
        import ray

        ref = _last_ref
        if ref is None or not ray.is_initialized():
            return not _waiting
        ready, _ = ray.wait([ref], timeout=timeout_s)
        return bool(ready)
    except Exception as exc:  # noqa: BLE001
        log.debug("metrics flush failed: %s", exc)
        return False


def _flush_at_exit() -> None:
    if not flush():
        log.debug("metrics: the sink did not confirm the last values before exit")


# -- the platform's calls -------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., None])


def _never_raises(fn: F) -> F:
    """Metrics are a courtesy: a bad value (or anything else) is a debug log, never an error."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            log.debug("%s not recorded: %s", fn.__name__, exc)

    return call  # type: ignore[return-value]


@_never_raises
def record_step(pipeline: str, step: str, status: str, duration_s: float) -> None:
    """One step execution: its duration (histogram) and outcome (counter)."""
    tags = {"pipeline": pipeline, "step": step, "status": status}
    _emit("mlplatform_step_duration_seconds", max(0.0, float(duration_s)), tags)
    _emit("mlplatform_steps", 1, tags)


@_never_raises
def record_rows(pipeline: str, rows_in: int, valid: int, quarantined: int) -> None:
    """A validated batch: rows in, valid and quarantined (counters, and the last batch's gauge)."""
    for kind, n in (("in", rows_in), ("valid", valid), ("quarantined", quarantined)):
        _emit("mlplatform_rows", int(n), {"pipeline": pipeline, "kind": kind})
        _emit("mlplatform_batch_rows", int(n), {"pipeline": pipeline, "kind": kind})


@_never_raises
def record_summary_rows(pipeline: str, summary: dict[str, Any]) -> None:
    """`record_rows` from a step's summary when it has the validate step's counts (rows_in,
    rows_valid, rows_quarantined); any other summary records nothing."""
    if isinstance(summary.get("rows_in"), int):
        record_rows(pipeline, summary["rows_in"], int(summary.get("rows_valid") or 0),
                    int(summary.get("rows_quarantined") or 0))


@_never_raises
def record_run(pipeline: str, cause: str, status: str) -> None:
    """A finished run, by what started it (manual, new_data, schedule, drift, ...) and status."""
    _emit("mlplatform_runs", 1, {"pipeline": pipeline, "cause": cause or "manual", "status": status})


@_never_raises
def set_live_drift(pipeline: str, version: str, feature: str, score: float, drifted: bool) -> None:
    """The latest live-drift verdict for one feature of the served traffic."""
    tags = {"pipeline": pipeline, "version": version, "feature": feature}
    _emit("mlplatform_live_drift_score", float(score), tags)
    _emit("mlplatform_live_drift_detected", 1.0 if drifted else 0.0, tags)


@_never_raises
def set_live_quality(pipeline: str, version: str, variant: str, metric: str, value: float,
                     *, estimated: bool) -> None:
    """The latest live quality of a version: realised (from feedback) or estimated (CBPE)."""
    _emit("mlplatform_live_quality", float(value),
          {"pipeline": pipeline, "version": version, "variant": variant, "metric": metric,
           "kind": "estimated" if estimated else "realised"})


__all__ = ["METRIC_NAMES", "PIPELINE_INSTRUMENTS", "SERVE_INSTRUMENTS", "flush", "prometheus_names",
           "record_rows", "record_run", "record_step", "record_summary_rows", "set_live_drift",
           "set_live_quality"]
