"""The search on the session's real Ray: ASHA stops weak trials of an iterative estimator,
its trials report (and checkpoint) only at the rungs, Optuna, grid and CV searches run, a
killed trial resumes from its checkpoint and the search still finishes, and one model per
segment is fitted in parallel."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from sklearn.datasets import make_classification

from mlplatform.spec import ModelSpec
from mlplatform.training.data import SplitData
from mlplatform.training.search import SearchResult, final_fit, run_search
from mlplatform.training.trial import rung_plan

pytestmark = pytest.mark.ray
SPACE = {"learning_rate": {"type": "loguniform", "low": 0.02, "high": 0.3},
         "max_leaf_nodes": {"type": "randint", "low": 4, "high": 32}}


def _data(n: int = 3000, seed: int = 0) -> SplitData:
    X, y = make_classification(n, 8, n_informative=5, random_state=seed)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(8)])
    frame["c"] = np.where(frame["f0"] > 0, "a", "b")
    cut = int(n * 0.8)
    return SplitData(frame.iloc[:cut].reset_index(drop=True), y[:cut],
                     frame.iloc[cut:].reset_index(drop=True), y[cut:])


def _model(**search: object) -> ModelSpec:
    return ModelSpec.model_validate({
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 40, "early_stopping": False},
        "search": {"space": SPACE, "num_samples": 4, **search}})


def test_asha_stops_weak_trials_and_the_best_keeps_its_iterations(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    result = run_search(_model(num_samples=6, scheduler="asha", max_iterations=40, report_every=10,
                               reduction_factor=2), _data(), storage_path=str(tmp_path), name="asha")
    iterations = sorted(t.iterations or 0 for t in result.trials)
    assert len(result.trials) == 6 and all(t.status == "TERMINATED" for t in result.trials)
    assert iterations[0] < 40 and iterations[-1] == 40  # some stopped early, the best ran to the end
    assert result.best_config["max_iter"] == 40
    assert 0.5 < result.best_score <= 1


def _reports(experiment: str) -> dict[str, tuple[list[tuple[int, int]], int]]:
    """Per trial folder: its reports in order as (iterations, restored) (result.json; the
    attempts after a restore appended), and how many checkpoints it kept."""
    out = {}
    for result in Path(experiment).glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out[result.parent.name] = ([(r["iterations"], r["restored"]) for r in lines],
                                   len(list(result.parent.glob("checkpoint_*"))))
    return out


def test_asha_trials_report_only_at_rungs_and_stop_at_one(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    model = _model(num_samples=8, scheduler="asha", max_iterations=45, report_every=5, reduction_factor=2)
    model.params["max_iter"] = 45
    grace, plan = rung_plan(model.search)  # type: ignore[arg-type]
    # Rungs at 5 x 2^k iterations up to 40 (grace_period 1 report of 5), then the end: nothing
    # between, where ASHA would not decide.
    assert (grace, plan) == (5, [5, 10, 20, 40, 45])
    result = run_search(model, _data(), storage_path=str(tmp_path), name="rungs")
    reports = _reports(result.path)
    assert len(reports) == 8 and len(result.trials) == 8
    for lines, checkpoints in reports.values():
        iterations = [i for i, _ in lines]
        assert iterations == plan[:len(iterations)], iterations  # the rungs, in order, no others
        # A checkpoint at every rung, none at the end (the trial is over: nothing to resume).
        assert checkpoints == len([i for i in iterations if i < 45]), (iterations, checkpoints)
    ends = sorted(t.iterations or 0 for t in result.trials)
    assert set(ends) <= set(plan) and ends[0] < 45 and ends[-1] == 45  # stopped at a rung; the best ran on
    assert result.best_config["max_iter"] == 45


def test_binning_once_per_search_grows_the_same_trees() -> None:
    """_binned_once hands the first fit's bins to the later warm-start fits (scikit-learn's
    private _bin_data): every fit of every trial must come out as without it."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlplatform.training.trial import _binned_once

    X, y = make_classification(4000, 6, random_state=0)
    bins: dict = {}
    for config in ({"learning_rate": 0.1, "max_leaf_nodes": 31}, {"learning_rate": 0.3, "max_leaf_nodes": 7}):
        fixed = {"early_stopping": False, "random_state": 0, "warm_start": True}
        plain = HistGradientBoostingClassifier(**fixed, **config)
        cached = HistGradientBoostingClassifier(**fixed, **config)
        for target in (5, 15, 40):
            plain.set_params(max_iter=target).fit(X, y)
            with _binned_once(cached.set_params(max_iter=target), X, bins):
                cached.fit(X, y)
            assert np.array_equal(plain.predict_proba(X), cached.predict_proba(X))
        assert "_bin_data" not in vars(cached)  # the checkpoint pickles a plain estimator
    assert len(bins) == 1  # one binning for both trials and all their fits


def test_optuna_grid_and_cv_searches(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    data = _data(1500)
    optuna = run_search(_model(algorithm="optuna"), data, storage_path=str(tmp_path), name="optuna")
    assert len(optuna.trials) == 4 and optuna.best_score > 0.8
    grid = run_search(ModelSpec.model_validate({
        "estimator": "sklearn.linear_model.LogisticRegression",
        "search": {"algorithm": "grid", "space": {"C": {"type": "grid", "values": [0.01, 1.0, 100.0]}}}}),
        data, storage_path=str(tmp_path), name="grid")
    assert sorted(t.config["C"] for t in grid.trials) == [0.01, 1.0, 100.0]
    cv = run_search(_model(cv_folds=3, num_samples=2), data, storage_path=str(tmp_path), name="cv")
    assert all(t.score is not None for t in cv.trials)


def _trial_pids(temp_dir: str) -> list[int]:
    """Worker processes of the session cluster that run a Tune trial right now."""
    from mlplatform.runtime.local import cluster_processes

    pids = []
    for proc in cluster_processes(temp_dir):
        try:
            if " ".join(proc.cmdline()).startswith("ray::ImplicitFunc"):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


@pytest.mark.parametrize("asha", [
    # grace_period past the end: no rung to stop at, a checkpoint every 5 iterations all along
    {"report_every": 5, "grace_period": 12},
    # rungs at 3, 6, 12, 24, 48 iterations (a checkpoint at each), then every 3 to the end
    {"report_every": 3, "grace_period": 1, "reduction_factor": 2},
], ids=["every-report", "rungs"])
def test_a_killed_trial_resumes_from_its_checkpoint(ray_connected, tmp_path: Path,  # noqa: ANN001
                                                    asha: dict[str, float]) -> None:
    model = _model(num_samples=2, scheduler="asha", max_iterations=60, max_failures=2, **asha)
    model.params["max_iter"] = 60
    plan = rung_plan(model.search)[1]  # type: ignore[arg-type]
    out: dict[str, SearchResult | BaseException] = {}

    def search() -> None:
        try:
            out["result"] = run_search(model, _data(30000, 1), storage_path=str(tmp_path), name="killed")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            out["result"] = exc

    thread = threading.Thread(target=search)
    thread.start()
    killed: list[int] = []
    deadline = time.time() + 120
    while time.time() < deadline and not killed and thread.is_alive():
        if list(tmp_path.glob("**/checkpoint_000001")):  # a trial has checkpointed twice
            for pid in _trial_pids(ray_connected["temp_dir"]):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)
    thread.join(timeout=300)
    assert killed, ("no trial worker was found to kill", repr(out.get("result"))[:1500])
    result = out["result"]
    assert isinstance(result, SearchResult), result
    assert all(t.status == "TERMINATED" and t.score is not None for t in result.trials)
    assert max(t.restored for t in result.trials) >= 1  # resumed from a checkpoint, not from scratch
    assert max(t.iterations or 0 for t in result.trials) == 60
    for lines, _ in _reports(result.path).values():
        assert {i for i, _ in lines} <= set(plan), lines
        resumed = [i for i, restored in lines if restored >= 1]
        if resumed:
            # Its first report after the restore is a later rung than the first (it went on from a
            # checkpoint, not from scratch), what it reported before the kill is the rungs before
            # it, in order, and from there it reports each later rung once, in order.
            # At the seam, one line each way is Tune's, not ours:
            # - The last line before the kill may be missing: on a restart Tune copies result.json
            #   back from the storage path, which can lag the driver's lines.
            # - The last rung before the kill may be reported again: Tune logs a result before it
            #   registers the checkpoint that came with it (TuneController._process_trial_result,
            #   then a save future), so a kill in between restores from the rung before it (seen
            #   in a suite run: 3, 6, 12, killed, 12, 24, 48).
            before = [i for i, restored in lines if restored == 0]
            assert resumed[0] > plan[0] and before == plan[:len(before)], lines
            start = plan.index(resumed[0])
            assert len(before) - 1 <= start <= len(before) + 1, lines
            assert resumed == plan[start:start + len(resumed)], lines


def test_one_model_per_segment_in_parallel(ray_connected, tmp_path: Path) -> None:  # noqa: ANN001
    a, b = _data(1200, 1), _data(1200, 2)
    models = final_fit(_model(), {"a": a, "b": b}, {"learning_rate": 0.1}, storage_path=str(tmp_path),
                       name="segments")
    assert set(models) == {"a", "b"}
    for key, data in (("a", a), ("b", b)):
        est = models[key].named_steps["model"]
        assert est.learning_rate == 0.1
        assert models[key].score(data.X_val, data.y_val) > 0.7
    # Different data, different models.
    assert not np.allclose(models["a"].predict_proba(a.X_val), models["b"].predict_proba(a.X_val))
