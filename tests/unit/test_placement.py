"""Where a step runs (mlplatform.runtime.placement) and the in-process search's configurations
(mlplatform.training.local_search): the spec's override, the refusals, and the semantics of
Tune's search space (bounds, grids, draws with replacement) that the local search keeps."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from mlplatform.runtime.placement import LOCAL_MAX_ROWS, place
from mlplatform.spec import ExecutionSpec, ModelSpec, PipelineSpec
from mlplatform.training.local_search import configs, needs_tune

BASE = {"name": "p", "source": {"path": "/d", "entity_column": "id", "timestamp_column": "t"}}


def test_auto_runs_small_inputs_here_and_big_ones_on_the_cluster() -> None:
    limit = LOCAL_MAX_ROWS["validate"]
    assert place(None, "validate", limit).placement == "local"
    assert place(None, "validate", limit + 1).placement == "cluster"
    assert place(ExecutionSpec(), "train", 0).local


def test_the_spec_overrides_the_threshold_and_the_mode() -> None:
    ex = ExecutionSpec(local_max_rows={"train": 10})
    got = place(ex, "train", 11)
    assert got.placement == "cluster" and got.threshold_rows == 10
    assert "execution.local_max_rows" in got.reason
    assert place(ex, "validate", 11).local  # the other steps keep the measured threshold
    assert place(ExecutionSpec(placement="cluster"), "ingest", 1).placement == "cluster"
    assert place(ExecutionSpec(placement="local"), "ingest", 10**12).local
    # What only Ray implements goes to the cluster whatever the mode and the size.
    forced = place(ExecutionSpec(placement="local"), "train", 1, cluster_only="ASHA")
    assert forced.placement == "cluster" and forced.reason == "ASHA"


@pytest.mark.parametrize(("execution", "where"), [
    ({"placement": "gpu"}, "execution.placement"),
    ({"local_max_rows": {"trian": 5}}, "execution.local_max_rows.trian"),
    ({"local_max_rows": {"train": -1}}, "execution.local_max_rows"),
    ({"workers": 3}, "execution.workers"),
])
def test_a_wrong_execution_section_is_refused_naming_the_field(execution: dict, where: str) -> None:
    with pytest.raises(ValidationError) as err:
        PipelineSpec.model_validate({**BASE, "execution": execution})
    text = str(err.value).replace("\n  ", ".").replace("\n", " ")
    assert where in text, text


def _model(space: dict, **search: object) -> ModelSpec:
    return ModelSpec.model_validate({"estimator": "sklearn.linear_model.LogisticRegression",
                                     "search": {"space": space, **search}, "seed": 7})


def test_random_draws_keep_tunes_bounds_and_are_seeded() -> None:
    space = {"C": {"type": "loguniform", "low": 0.01, "high": 10},
             "tol": {"type": "uniform", "low": 0.1, "high": 0.2},
             "max_iter": {"type": "randint", "low": 5, "high": 8},
             "n": {"type": "qrandint", "low": 7, "high": 20, "q": 5},
             "solver": {"type": "choice", "values": ["lbfgs"]}}
    got = configs(_model(space, num_samples=400))
    assert len(got) == 400
    assert all(0.01 <= c["C"] <= 10 and 0.1 <= c["tol"] <= 0.2 for c in got)
    assert {c["max_iter"] for c in got} == {5, 6, 7}  # randint: high exclusive, as Tune's
    assert {c["n"] for c in got} == {10, 15, 20}  # qrandint: multiples of q, high inclusive
    assert {c["solver"] for c in got} == {"lbfgs"}  # a choice is drawn with replacement
    # log-uniform: about half the draws below the geometric mean of the bounds
    below = sum(c["C"] < math.sqrt(0.01 * 10) for c in got) / len(got)
    assert 0.4 < below < 0.6
    assert configs(_model(space, num_samples=5)) == configs(_model(space, num_samples=5))


def test_grids_expand_like_tunes_grid_search() -> None:
    space = {"C": {"type": "grid", "values": [0.1, 1.0, 10.0]},
             "penalty": {"type": "grid", "values": ["l2", None]}}
    grid = configs(_model(space, algorithm="grid", num_samples=4))
    assert len(grid) == 6 and len({(c["C"], c["penalty"]) for c in grid}) == 6
    # random algorithm: every grid point num_samples times, each with its own draw of the rest
    mixed = configs(_model({**space, "tol": {"type": "uniform", "low": 0.1, "high": 0.2}}, num_samples=2))
    assert len(mixed) == 12
    assert sorted((c["C"], str(c["penalty"])) for c in mixed) == sorted(
        (c, str(p)) for c in (0.1, 1.0, 10.0) for p in ("l2", None) for _ in range(2))
    assert len({c["tol"] for c in mixed}) == 12


def test_what_only_ray_implements_needs_the_cluster() -> None:
    assert needs_tune(_model({"C": {"type": "uniform", "low": 0.1, "high": 1}})) is None
    hgb = {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
           "search": {"space": {"learning_rate": {"type": "uniform", "low": 0.05, "high": 0.3}}}}
    assert "asha" in (needs_tune(ModelSpec.model_validate(
        {**hgb, "search": {**hgb["search"], "scheduler": "asha"}})) or "")
    assert "optuna" in (needs_tune(ModelSpec.model_validate(
        {**hgb, "search": {**hgb["search"], "algorithm": "optuna"}})) or "")
