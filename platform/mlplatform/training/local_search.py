"""The search and the final fit in the job's own process, for training sets below the train
step's placement threshold (mlplatform.runtime.placement).

Each trial is the same work a Tune trial does (`trial.holdout_score`, `fold_score`,
`fit_final`), run one after another as scikit-learn's RandomizedSearchCV does with its
default n_jobs: the estimators use every core themselves. What Tune adds — trial actors,
checkpoints, retries from a checkpoint, early stopping — costs seconds of fixed overhead
that a small search does not repay, and a failed trial here is simply recorded as failed.
The configurations are Tune's own draws for the same seed (see `configs`). ASHA and Optuna
searches always run on Tune.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES
from mlplatform.spec import ModelSpec
from mlplatform.training.data import SplitData
from mlplatform.training.search import SearchResult, TrialRecord, best_trial
from mlplatform.training.trial import (
    TrialSetup,
    cv_folds,
    fit_final,
    fold_score,
    holdout_score,
    mean_scores,
    search_rows,
)


def needs_tune(model: ModelSpec) -> str | None:
    """Why training needs the cluster whatever the data's size (None: it can run here)."""
    search = model.search
    if model.num_workers:
        return "model.num_workers: data-parallel training runs on Ray Train"
    if search is None:
        return None
    if search.scheduler == "asha":
        return "search.scheduler asha: early stopping runs on Tune"
    if search.algorithm == "optuna":
        return "search.algorithm optuna runs on Tune"
    return None


def configs(model: ModelSpec) -> list[dict[str, Any]]:
    """The trials' configurations, drawn exactly as Tune's BasicVariantGenerator draws them for
    the same seed (its own `generate_variants` over the same space, one call per sample, one
    generator throughout): every grid point, times `num_samples` draws of the other dimensions
    for the random algorithm. So a training set just below the threshold and one just above it
    try the same configurations, and the search picks the same model wherever it runs."""
    from ray.tune.search.variant_generator import generate_variants

    from mlplatform.training.search import tune_space

    search = model.search
    assert search is not None
    space = {"config": tune_space(search.space)}
    rng = np.random.default_rng(model.seed)  # BasicVariantGenerator(random_state=seed) does this
    out: list[dict[str, Any]] = []
    for _ in range(1 if search.algorithm == "grid" else search.num_samples):
        out += [dict(spec["config"]) for _, spec in generate_variants(space, random_state=rng)]
    return out


# Below this many training rows the fits here run with one OpenMP / BLAS thread. A small fit's
# threads mostly wait for each other, and for cores other processes hold: on the shared 2-core
# machine a 4k-row search of HistGradientBoosting took 13.5 s with two threads and 1.3 s with
# one (benchmarks/pipeline.py's plain baseline, measured under load).
ONE_THREAD_BELOW_ROWS = 50_000


def _threads(rows: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1) if rows < ONE_THREAD_BELOW_ROWS else contextlib.nullcontext()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def run_search_local(model: ModelSpec, data: SplitData, *, modules: str = DEFAULT_ESTIMATOR_MODULES,
                     on_trial: Callable[[TrialRecord], None] | None = None) -> SearchResult:
    """The search the spec describes, in this process (random or grid, FIFO)."""
    search = model.search
    assert search is not None and needs_tune(model) is None
    metric, mode = model.metric, model.metric_mode or "max"
    data = search_rows(model, data)
    setup = TrialSetup(model=model, modules=modules)
    folds = cv_folds(setup, data) if data.X_val is None else []
    trials: list[TrialRecord] = []
    t0 = time.perf_counter()
    with _threads(len(data.X_train)):
        _trials(model, data, setup, folds, trials, t0, on_trial)
    best = best_trial(trials, mode)
    return SearchResult(metric=metric, mode=mode, best_config=dict(best.config),
                        best_score=float(best.score or 0), trials=trials, wall_s=time.perf_counter() - t0,
                        path="")


def _trials(model: ModelSpec, data: SplitData, setup: TrialSetup, folds: list, trials: list[TrialRecord],
            t0: float, on_trial: Callable[[TrialRecord], None] | None) -> None:
    search, metric = model.search, model.metric
    assert search is not None
    for i, config in enumerate(configs(model)):
        if search.time_budget_s and time.perf_counter() - t0 > search.time_budget_s:
            break  # as Tune's time_budget_s: no new trial after the budget
        config = {k: _plain(v) for k, v in config.items()}
        try:
            scores = (holdout_score(setup, data, config) if data.X_val is not None
                      else mean_scores([fold_score(setup, data, config, f) for f in folds]))
            value = scores.get(metric)
            record = TrialRecord(trial_id=f"local_{i:05d}", config=config,
                                 score=float(value) if value is not None and np.isfinite(value) else None,
                                 metrics={k: float(v) for k, v in scores.items()}, status="TERMINATED")
        except Exception as exc:  # noqa: BLE001 - a failed trial is a record, as on Tune
            record = TrialRecord(trial_id=f"local_{i:05d}", config=config, score=None, status="ERROR",
                                 error=f"{type(exc).__name__}: {exc}"[:500])
        trials.append(record)
        if on_trial:
            on_trial(record)


def final_fit_local(model: ModelSpec, data: dict[str, SplitData], config: dict[str, Any], *,
                    modules: str = DEFAULT_ESTIMATOR_MODULES) -> dict[str, Any]:
    """One model per segment, fitted in this process, one after another."""
    from mlplatform.errors import PlatformError

    setup = TrialSetup(model=model, modules=modules, final=True)
    models = {}
    for segment, rows in sorted(data.items()):
        try:
            with _threads(len(rows.X_train)):
                models[segment] = fit_final(setup, rows, config)
        except Exception as exc:  # noqa: BLE001 - as final_fit reports a failed trial
            raise PlatformError(f"the final fit{f' of segment {segment!r}' if len(data) > 1 else ''} "
                                f"failed: {type(exc).__name__}: {exc}") from None
    return models
