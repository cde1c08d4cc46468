"""Hyperparameter search and the final fit, both on Ray Tune.

One function trainable serves every case: a holdout or time-ordered CV score for a
single-`fit` estimator, per-iteration reports for ASHA on an iterative one (warm_start
or partial_fit), and the final fit with the best configuration. The final fit runs as a
one-trial Tune run rather than a Ray Train run: it reuses this trainable, its
checkpoints and FailureConfig retries, where Ray Train would add a second framework
(worker groups, a Train run config) for a model that fits on one worker anyway.

The data goes into the object store once (tune.with_parameters); trials reuse their
actors (reuse_actors=True: a fresh worker process per trial doubled the wall time on two
cores, see benchmarks/tuning.py).
"""

from __future__ import annotations

import ctypes
import inspect
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from sklearn.model_selection import TimeSeriesSplit

from mlplatform.evaluation.metrics import predictions, score
from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES
from mlplatform.spec import ModelSpec, ParamDistribution, SearchSpec
from mlplatform.training.data import SplitData
from mlplatform.training.estimators import MODEL_STEP, build_estimator, iterative_kind, new_estimator

_STATE = "state.pkl"


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


class TrialSetup(BaseModel):
    """What every trial needs besides its config (small: travels with the trainable)."""

    model: ModelSpec
    modules: str = DEFAULT_ESTIMATOR_MODULES
    final: bool = False
    iterative: bool = False


def _score(setup: TrialSetup, pipe: Any, X: Any, y: Any) -> dict[str, float]:
    pred, proba = predictions(setup.model.task, pipe, X)
    return score(setup.model.task, y, pred, proba)


def _report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """Report, with the state as a checkpoint; tune.report persists it to the run's storage
    before it returns, so the local folder goes right after."""
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="mlp-ckpt-") as folder:
        with open(os.path.join(folder, _STATE), "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restore() -> dict[str, Any] | None:
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder, open(os.path.join(folder, _STATE), "rb") as f:
        return pickle.load(f)


def fit_final(setup: TrialSetup, data: SplitData, config: dict[str, Any]) -> Any:
    """The final model: `config` fitted on every training row (validation rows included)."""
    X = data.X_train if data.X_val is None else _concat(data.X_train, data.X_val)
    y = data.y_train if data.y_val is None else np.concatenate([data.y_train, data.y_val])
    pipe = build_estimator(setup.model, X, config, setup.modules)
    pipe.fit(X, y)
    return pipe


def holdout_score(setup: TrialSetup, data: SplitData, config: dict[str, Any]) -> dict[str, float]:
    """One trial of a single-`fit` estimator scored on the validation rows."""
    pipe = build_estimator(setup.model, data.X_train, config, setup.modules)
    pipe.fit(data.X_train, data.y_train)
    return _score(setup, pipe, data.X_val, data.y_val)


def cv_folds(setup: TrialSetup, data: SplitData) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(TimeSeriesSplit(n_splits=setup.model.search.cv_folds or 3).split(data.X_train))  # type: ignore[union-attr]


def fold_score(setup: TrialSetup, data: SplitData, config: dict[str, Any], fold: tuple[np.ndarray, np.ndarray]
               ) -> dict[str, float]:
    tr, va = fold
    pipe = build_estimator(setup.model, data.X_train, config, setup.modules)
    pipe.fit(data.X_train.iloc[tr], data.y_train[tr])
    return _score(setup, pipe, data.X_train.iloc[va], data.y_train[va])


def mean_scores(done: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.nanmean([d[k] for d in done])) for k in done[0]}


def trainable(config: dict[str, Any], data: Any, setup: TrialSetup) -> None:
    """One trial (or, with setup.final, the final fit of the segment `config[SEGMENT]` of the
    dict `data`). Reports `setup.model.metric` and checkpoints its progress. The work itself
    is the functions above, which the in-process search (training.local_search) runs too."""

    state = _restore()
    restored = (state or {}).get("restored", -1) + 1 if state else 0
    if setup.final:
        config = dict(config)
        data = data[config.pop(SEGMENT)]  # type: ignore[index]
        t0 = time.perf_counter()
        pipe = fit_final(setup, data, config)
        _report({"fit_s": time.perf_counter() - t0, "restored": restored},
                {"model": pipe, "restored": restored})
        return
    if setup.iterative:
        _iterative(config, data, setup, state, restored)
        return
    if data.X_val is not None:
        _report({**holdout_score(setup, data, config), "restored": restored})
        return
    # Time-ordered CV: a checkpoint after each fold, so a retried trial resumes at the next fold.
    done: list[dict[str, float]] = (state or {}).get("folds", [])
    for i, fold in enumerate(cv_folds(setup, data)):
        if i < len(done):
            continue
        done.append(fold_score(setup, data, config, fold))
        _report({**mean_scores(done), "folds_done": len(done), "restored": restored},
                {"folds": done, "restored": restored})


def _concat(a: Any, b: Any) -> Any:
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def rung_plan(search: SearchSpec) -> tuple[int, list[int]]:
    """ASHA's grace period in iterations, and the iterations an iterative trial reports at.

    The spec counts ASHA's time in reports of `report_every` iterations; Tune's scheduler
    counts it in iterations (time_attr "iterations", so that the rungs line up with the
    model's own count, also after a restore): the first rung is grace_period x report_every
    iterations, each next one reduction_factor times further (Ray's bracket, computed as Ray
    does), max_t is max_iterations. A trial reports, with a checkpoint, at the first multiple
    of report_every at or past each rung: ASHA decides nowhere else, so the same trials stop
    as with a report every report_every iterations, for fewer warm-start refits (each
    re-bins the rows and re-predicts every tree so far), scorings and checkpoints. Past the
    last rung below max_iterations no trial can be stopped and every one runs to the end: it
    reports and checkpoints every report_every iterations from there (with no such rung,
    grace_period past the end: all along), so that a retried survivor loses at most that;
    the report at max_iterations ends the trial and has no checkpoint. E.g. 100 iterations,
    report_every 10, grace_period 1, reduction_factor 3: reports at 10, 30, 90 and 100.
    """
    every, top = search.report_every, search.max_iterations
    grace = min(search.grace_period * every, top)
    rungs = int(np.log(top / grace) / np.log(search.reduction_factor) + 1)
    at = {-(-math.ceil(grace * search.reduction_factor ** k) // every) * every for k in range(rungs)}
    below = sorted(r for r in at if r < top)  # a rung met at max_iterations stops nothing
    return grace, [*below, *range((below or [0])[-1] + every, top, every), top]


# The fitted preprocessing, the transformed rows and their bins (_binned_once) of this
# worker's search. The preprocessing does not depend on the searched parameters (they name
# estimator parameters), so the trials an actor runs share it: fitting it took 0.46 s of a
# 0.86 s trial stopped at the first rung (200k rows). One entry: Tune's trial actors live
# for one search.
_PREPROCESSED: dict[str, tuple[Any, Any, Any, dict[tuple[int, int], Any]]] = {}


def _preprocessed(pipe: Any, data: SplitData, fitted: bool) -> tuple[Any, Any, dict[tuple[int, int], Any]]:
    """The training and validation rows transformed by `pipe`'s preprocessing, which becomes
    the shared fitted one, and the bins cache of those training rows."""
    from ray import tune

    key = os.path.dirname(tune.get_context().get_trial_dir())  # the experiment
    hit = _PREPROCESSED.get(key)
    if hit is None:
        pre = pipe.named_steps["preprocess"]
        if not fitted:
            pre.fit(data.X_train, data.y_train)
        hit = (pre, pre.transform(data.X_train), pre.transform(data.X_val), {})
        _PREPROCESSED.clear()
        _PREPROCESSED[key] = hit
    pipe.steps[0] = ("preprocess", hit[0])
    return hit[1], hit[2], hit[3]


@contextmanager
def _binned_once(est: Any, X: Any, bins: dict[tuple[int, int], Any]) -> Iterator[None]:
    """Within: a HistGradientBoosting fit on the rows `X` bins them once per search.

    Each warm-start fit re-bins all its training rows (0.28 s of the 0.35 s fit to the first
    rung, 200k rows x 20; binning once took the ASHA benchmark from 44 to 32 CPU seconds),
    though the rows, max_bins and the seed the binning subsamples with are the same for every
    fit of the search. The first fit's binning (scikit-learn's own _bin_data) is kept with its
    fitted _BinMapper and handed to the later fits; anything else (another class or _bin_data
    signature, other rows, sample weights, categorical features, the validation rows) bins as
    usual. Private API of scikit-learn, hence the guards; the trees come out the same
    (tests/integration/test_search.py).
    """
    own = getattr(type(est), "_bin_data", None)
    if (type(est).__module__ != "sklearn.ensemble._hist_gradient_boosting.gradient_boosting" or own is None
            or list(inspect.signature(own).parameters) != ["self", "X", "sample_weight", "is_training_data"]):
        yield
        return

    def bin_data(Xa: Any, sample_weight: Any, is_training_data: bool) -> Any:
        if (not is_training_data or Xa is not X or sample_weight is not None
                or getattr(est, "_is_categorical_remapped", None) is not None):
            return own(est, Xa, sample_weight, is_training_data)
        key = (est.max_bins, int(est._random_seed))
        if key not in bins:
            binned = own(est, Xa, None, True)  # fits est._bin_mapper
            bins[key] = (est._bin_mapper, binned)
        est._bin_mapper = bins[key][0]
        return bins[key][1]

    est._bin_data = bin_data  # the instance's, for this fit only: never pickled
    try:
        yield
    finally:
        del est._bin_data


def _iterative(config: dict[str, Any], data: SplitData, setup: TrialSetup,
               state: dict[str, Any] | None, restored: int) -> None:
    """Grow the model from rung to rung (rung_plan) and report at each; a retried trial
    continues from the last rung it checkpointed."""

    model, search = setup.model, setup.model.search
    assert search is not None and data.X_val is not None
    kind = iterative_kind(new_estimator(model.estimator, setup.modules))
    assert kind is not None
    how, grow = kind
    if state:
        pipe, done = state["model"], state["iterations"]
    else:
        pipe, done = build_estimator(model, data.X_train, config, setup.modules), 0
    # Only the estimator grows between rungs, on rows transformed once (refitting the whole
    # Pipeline per report cost more than it saved).
    Xt, Xv, bins = _preprocessed(pipe, data, fitted=bool(state))
    est = pipe.named_steps[MODEL_STEP]
    classes = np.unique(data.y_train) if model.task == "classification" else None
    for target in rung_plan(search)[1]:
        if target <= done:
            continue
        if how == "warm_start":
            est.set_params(warm_start=True, **{grow: target})  # type: ignore[arg-type]
            with _binned_once(est, Xt, bins):
                est.fit(Xt, data.y_train)
        else:
            for _ in range(target - done):
                if classes is not None:
                    est.partial_fit(Xt, data.y_train, classes=classes)
                else:
                    est.partial_fit(Xt, data.y_train)
        done = target
        metrics = score(model.task, data.y_val, *predictions(model.task, est, Xv))
        last = done >= search.max_iterations  # the trial ends here: nothing to resume from
        _report({**metrics, "iterations": done, "restored": restored},
                None if last else {"model": pipe, "iterations": done, "restored": restored})


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


def search_rows(model: ModelSpec, data: SplitData) -> SplitData:
    """CV folds cut all the rows: a holdout given with them joins the training rows."""
    assert model.search is not None
    if model.search.cv_folds and data.X_val is not None:
        return SplitData(_concat(data.X_train, data.X_val), np.concatenate([data.y_train, data.y_val]))
    return data


def search_trial(config: dict[str, Any], data: Any, setup: TrialSetup) -> None:
    """A trial of run_search: `trainable`, then the memory its fits freed handed back.

    The trial actors live for the whole search (reuse_actors) and run each trial in a new
    thread; glibc's malloc keeps what a fit freed in that thread's arena (its mmap threshold
    rises to the largest array freed, so the next arrays come from the arenas), and each actor
    grew to ~700 MB private memory over 8 trials (200k rows) where joblib's workers, running
    the same fits in their main thread, stay near 260 MB. malloc_trim after each trial: ~350
    MB, and no slower (benchmarks/tuning.py)."""
    try:
        trainable(config, data, setup)
    finally:
        _trim_heap()


def _trim_heap() -> None:
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


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


SEGMENT = "__segment__"


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
        with result.checkpoint.as_directory() as folder, open(os.path.join(folder, _STATE), "rb") as f:
            models[segment] = pickle.load(f)["model"]
    return models
