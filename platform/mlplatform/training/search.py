"""Hyperparameter search and the final fit, both on Ray Tune.

One function trainable (training.trial) serves every case: a holdout or time-ordered CV
score for a single-`fit` estimator, per-iteration reports for ASHA on an iterative one
(warm_start or partial_fit), and the final fit with the best configuration. The final fit runs as a
one-trial Tune run rather than a Ray Train run: it reuses this trainable, its
checkpoints and FailureConfig retries, where Ray Train would add a second framework
(worker groups, a Train run config) for a model that fits on one worker anyway.

The data goes into the object store once (tune.with_parameters); trials reuse their
actors (reuse_actors=True: a fresh worker process per trial doubled the wall time on two
cores, see benchmarks/tuning.py).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES
from mlplatform.spec import ModelSpec, ParamDistribution
from mlplatform.training.data import SplitData
from mlplatform.training.estimators import iterative_kind, new_estimator
from mlplatform.training.trial import (
    SEGMENT,
    STATE_FILE,
    TrialSetup,
    rung_plan,
    search_rows,
    search_trial,
    trainable,
)


class TrialRecord(BaseModel):
    trial_id: str
    config: dict[str, Any]
    score: float | None
    metrics: dict[str, float] = Field(default_factory=dict)
    iterations: int | None = None
    status: str
    error: str | None = None
    restored: int = Field(0, description="Times the trial resumed from its checkpoint after a failure.")


class SearchResult(BaseModel):
    metric: str
    mode: str
    best_config: dict[str, Any]
    best_score: float
    trials: list[TrialRecord]
    wall_s: float
    path: str


def tune_space(space: dict[str, ParamDistribution]) -> dict[str, Any]:
    from ray import tune

    out: dict[str, Any] = {}
    for name, d in space.items():
        if d.type == "uniform":
            out[name] = tune.uniform(d.low, d.high)
        elif d.type == "loguniform":
            out[name] = tune.loguniform(d.low, d.high)
        elif d.type == "randint":
            out[name] = tune.randint(int(d.low or 0), int(d.high or 0))
        elif d.type == "qrandint":
            out[name] = tune.qrandint(int(d.low or 0), int(d.high or 0), int(d.q or 1))
        elif d.type == "choice":
            out[name] = tune.choice(d.values or [])
        else:
            out[name] = tune.grid_search(d.values or [])
    return out


def _concurrency(model: ModelSpec) -> int:
    import ray

    search = model.search
    assert search is not None
    if search.max_concurrent_trials:
        return search.max_concurrent_trials
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return max(1, int(cpus // search.cpus_per_trial))


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in config.items()}


def _quiet_tune() -> None:
    """Tune's new console reporter prints an experiment box even at verbose=0, onto stdout,
    where it breaks `--json` output; its legacy reporter honours verbose=0. Trial progress
    reaches users through our own callback instead."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


@dataclass(frozen=True)
class TuneStorage:
    """Tune's and Train's `RunConfig(storage_path, storage_filesystem)`: a local folder (no
    filesystem), or a path inside a filesystem resolved from the storage URI, which carries
    the endpoint and credentials to every trial (mlplatform.storage)."""

    path: str
    filesystem: Any = None  # pyarrow.fs.FileSystem

    def run_config(self) -> dict[str, Any]:
        return {"storage_path": self.path, "storage_filesystem": self.filesystem}


def run_search(model: ModelSpec, data: SplitData, *, storage_path: TuneStorage | str, name: str,
               modules: str = DEFAULT_ESTIMATOR_MODULES,
               on_trial: Callable[[TrialRecord], None] | None = None) -> SearchResult:
    """The search the spec describes, on the connected Ray cluster."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = model.search
    assert search is not None, "run_search needs model.search"
    metric, mode = model.metric, model.metric_mode or "max"
    data = search_rows(model, data)
    iterative = search.scheduler == "asha"  # check_model has made sure the estimator can
    setup = TrialSetup(model=model, modules=modules, iterative=iterative)
    # The concurrency limit: Tune wraps a Searcher (Optuna) in a ConcurrencyLimiter for
    # max_concurrent_trials but ignores it, with a warning, for the random and grid generator,
    # which takes it as its own max_concurrent.
    concurrency = _concurrency(model)
    if search.algorithm == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        algo: Any = OptunaSearch(metric=metric, mode=mode, seed=model.seed)
        limit: int | None = concurrency
    else:
        algo, limit = BasicVariantGenerator(random_state=model.seed, max_concurrent=concurrency), None
    if iterative:  # the rungs in iterations, where the trials report (rung_plan)
        grace, _ = rung_plan(search)
        scheduler: Any = ASHAScheduler(time_attr="iterations", max_t=search.max_iterations,
                                       grace_period=grace, reduction_factor=search.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    num_samples = 1 if search.algorithm == "grid" else search.num_samples
    fn = tune.with_resources(tune.with_parameters(search_trial, data=data, setup=setup),
                             {"cpu": search.cpus_per_trial})
    callbacks = [_Progress(metric, on_trial)] if on_trial else []
    tuner = tune.Tuner(
        fn, param_space=tune_space(search.space),
        tune_config=tune.TuneConfig(metric=metric, mode=mode, search_alg=algo, scheduler=scheduler,
                                    num_samples=num_samples, reuse_actors=True,
                                    max_concurrent_trials=limit,
                                    time_budget_s=search.time_budget_s),
        run_config=tune.RunConfig(name=name, **as_tune_storage(storage_path).run_config(), verbose=0,
                                  callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=search.max_failures)),
    )
    _quiet_tune()
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    trials = [_record(r, metric) for r in grid]
    best = best_trial(trials, mode)
    config = dict(best.config)
    if iterative and best.iterations:
        kind = iterative_kind(new_estimator(model.estimator, modules))
        grow = kind[1] if kind and kind[1] else "max_iter"  # partial_fit: epochs = max_iter of a fit
        if grow in new_estimator(model.estimator, modules).get_params():
            config[grow] = best.iterations
    return SearchResult(metric=metric, mode=mode, best_config=config, best_score=float(best.score or 0),
                        trials=trials, wall_s=wall, path=grid.experiment_path)


def best_trial(trials: list[TrialRecord], mode: str) -> TrialRecord:
    """The best finished trial; an errored trial's last result is partial (one fold, an early
    rung): never the best."""
    scored = [t for t in trials if t.status == "TERMINATED" and t.score is not None
              and np.isfinite(t.score)]
    if not scored:
        from mlplatform.errors import PlatformError

        errors = sorted({t.error or "no score" for t in trials})
        raise PlatformError(f"every trial of the search failed: {'; '.join(errors)[:1500]}")
    pick = max if mode == "max" else min
    return pick(scored, key=lambda t: t.score)  # type: ignore[arg-type, return-value]


def _record(result: Any, metric: str) -> TrialRecord:
    m = result.metrics or {}
    value = m.get(metric)
    keep = {k: float(v) for k, v in m.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k in
            ("roc_auc", "log_loss", "accuracy", "f1", "rmse", "mae", "r2")}
    return TrialRecord(
        trial_id=str(m.get("trial_id") or result.path.rsplit("/", 1)[-1]),
        config=_jsonable(result.config or {}),
        score=float(value) if value is not None and np.isfinite(value) else None,
        metrics=keep, iterations=m.get("iterations"),
        status="ERROR" if result.error else "TERMINATED",
        error=f"{type(result.error).__name__}: {result.error}"[:500] if result.error else None,
        restored=int(m.get("restored", 0) or 0))


# Listeners live here, not in the callback: Tune pickles its run config (callbacks included)
# and a listener usually closes over unpicklable things (a database engine, a console).
_LISTENERS: dict[str, Callable[[TrialRecord], None]] = {}


def _notify(key: str, record: TrialRecord) -> None:
    listener = _LISTENERS.get(key)
    if listener:
        listener(record)


class _Progress:
    """A Tune callback (driver side) that turns finished trials into TrialRecords for a listener."""

    def __new__(cls, metric: str, on_trial: Callable[[TrialRecord], None] | None) -> Any:
        import secrets

        from ray import tune

        key = secrets.token_hex(8)
        if on_trial:
            _LISTENERS[key] = on_trial

        class Progress(tune.Callback):
            def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                r = trial.last_result or {}
                v = r.get(metric)
                _notify(key, TrialRecord(trial_id=trial.trial_id, config=_jsonable(trial.config),
                                         score=float(v) if v is not None else None,
                                         iterations=r.get("iterations"), status="TERMINATED"))

        return Progress()


def as_tune_storage(storage_path: TuneStorage | str) -> TuneStorage:
    return storage_path if isinstance(storage_path, TuneStorage) else TuneStorage(path=storage_path)


def final_fit(model: ModelSpec, data: dict[str, SplitData], config: dict[str, Any], *,
              storage_path: TuneStorage | str,
              name: str, modules: str = DEFAULT_ESTIMATOR_MODULES, max_failures: int = 1) -> dict[str, Any]:
    """Fit one model per key of `data` (one key: a single model; several: one per segment, in
    parallel on the cluster) on all its training rows with `config`, each a retried Tune trial."""
    from ray import tune

    setup = TrialSetup(model=model, modules=modules, final=True)
    fn = tune.with_resources(tune.with_parameters(trainable, data=data, setup=setup), {"cpu": 1})
    tuner = tune.Tuner(fn, param_space={**config, SEGMENT: tune.grid_search(sorted(data))},
                       tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
                       run_config=tune.RunConfig(
                           name=name, **as_tune_storage(storage_path).run_config(), verbose=0,
                           failure_config=tune.FailureConfig(max_failures=max_failures)))
    models: dict[str, Any] = {}
    _quiet_tune()
    for result in tuner.fit():
        segment = (result.config or {}).get(SEGMENT)
        if result.error or result.checkpoint is None:
            from mlplatform.errors import PlatformError

            raise PlatformError(f"the final fit{f' of segment {segment!r}' if len(data) > 1 else ''} "
                                f"failed: {result.error}")
        with result.checkpoint.as_directory() as folder, open(os.path.join(folder, STATE_FILE), "rb") as f:
            models[segment] = pickle.load(f)["model"]
    return models
