"""What one trial of a search runs: on a Ray Tune actor (run_search) or in the job's own
process (training.local_search), the same functions either way.

A trial fits the spec's estimator with one configuration and scores it on the holdout or on
time-ordered CV folds, checkpointing as it goes so that a retried trial resumes; an
iterative estimator under ASHA grows from rung to rung (rung_plan); the final fit is one
more trial. Kept apart from the search driver (training.search) so that each reads alone.
"""

from __future__ import annotations

import ctypes
import inspect
import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from pydantic import BaseModel
from sklearn.model_selection import TimeSeriesSplit

from mlplatform.evaluation.metrics import predictions, score
from mlplatform.settings import DEFAULT_ESTIMATOR_MODULES
from mlplatform.spec import ModelSpec, SearchSpec
from mlplatform.training.data import SplitData
from mlplatform.training.estimators import MODEL_STEP, build_estimator, iterative_kind, new_estimator

STATE_FILE = "state.pkl"


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
        with open(os.path.join(folder, STATE_FILE), "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restore() -> dict[str, Any] | None:
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder, open(os.path.join(folder, STATE_FILE), "rb") as f:
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
    the same fits in their main thread, stay near 260 MB. So after a trial an actor that
    holds more than TRIM_ABOVE_BYTES freed hands it back (malloc_trim)."""
    try:
        trainable(config, data, setup)
    finally:
        _trim_heap()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


# What an actor may keep freed in malloc's arenas between trials before it is handed back.
# Trimming after every trial makes the next trial fault its arrays' pages in anew; never
# trimming let the search peak at 2.4 GB against 1.4 GB. benchmarks/tuning.py (200k rows, 32
# trials), Tune's time over joblib's: 1.12x trimming always, 1.07x never, 1.06x past this
# bound (1.5 GB), in runs of one day whose spread for the same code was 1.06x-1.19x.
TRIM_ABOVE_BYTES = 256 << 20


def _trim_heap() -> None:
    try:
        libc = ctypes.CDLL(None)
        free: int | None = None
        try:
            mallinfo2 = libc.mallinfo2
            mallinfo2.restype = _MallInfo2
            free = int(mallinfo2().fordblks)
        except AttributeError:  # glibc < 2.33: trim every time
            pass
        if free is None or free > TRIM_ABOVE_BYTES:
            libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


SEGMENT = "__segment__"
