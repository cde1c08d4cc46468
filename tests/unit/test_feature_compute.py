"""Feature computation: windowed aggregations against a brute-force definition, and the
errors a user gets for a broken view or transformation."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlplatform.errors import InputError
from mlplatform.features.compute import compute_frame
from mlplatform.features.definitions import resolve_views
from mlplatform.spec import PipelineSpec

T0 = pd.Timestamp("2026-01-01")


def _spec(views: list[dict], services: list[dict] | None = None) -> PipelineSpec:
    return PipelineSpec.model_validate({
        "name": "fx", "source": {"path": "/nowhere", "entity_column": "e", "timestamp_column": "ts"},
        "features": {"views": views, "services": services or []}})


AGG_VIEW = {"name": "v", "features": ["x"], "aggregations": [
    {"column": "x", "functions": ["count", "sum", "mean", "min", "max", "last"], "windows": ["10m", "30m"]}]}


def brute(df: pd.DataFrame, window_s: int) -> dict[str, list]:
    out: dict[str, list] = {k: [] for k in ("count", "sum", "mean", "min", "max", "last")}
    for i, row in df.iterrows():
        inside = df[(df.e == row.e) & (df.ts <= row.ts) & (df.ts > row.ts - pd.Timedelta(seconds=window_s))]
        vals = inside.x.dropna()
        out["count"].append(float(len(vals)))
        out["sum"].append(float(vals.sum()) if len(vals) else math.nan)
        out["mean"].append(float(vals.mean()) if len(vals) else math.nan)
        out["min"].append(float(vals.min()) if len(vals) else math.nan)
        out["max"].append(float(vals.max()) if len(vals) else math.nan)
        # last: the non-null value with the latest (ts, position)
        last = inside.dropna(subset=["x"])
        out["last"].append(float(last.sort_values("ts", kind="stable").x.iloc[-1]) if len(last) else math.nan)
        del i
    return out


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 60),
                               st.none() | st.integers(-50, 50)), min_size=1, max_size=40))
def test_aggregations_equal_brute_force(rows) -> None:
    df = pd.DataFrame({"e": [r[0] for r in rows], "ts": [T0 + pd.Timedelta(minutes=r[1]) for r in rows],
                       "x": [np.nan if r[2] is None else float(r[2]) for r in rows]})
    view = resolve_views(_spec([AGG_VIEW]))["v"]
    got = compute_frame(view, df)
    # compute_frame sorts by (entity, ts) stably: compare against the same order.
    ordered = df.sort_values(["e", "ts"], kind="stable").reset_index(drop=True)
    for window, seconds in (("10m", 600), ("30m", 1800)):
        want = brute(ordered, seconds)
        for fn, values in want.items():
            col = got[f"x_{fn}_{window}"].to_numpy(dtype="float64")
            np.testing.assert_allclose(col, np.array(values, dtype="float64"), rtol=1e-9,
                                       err_msg=f"{fn} over {window}")


def _module(name: str, **fns) -> None:  # noqa: ANN003
    mod = types.ModuleType(name)
    for k, v in fns.items():
        setattr(mod, k, v)
    sys.modules[name] = mod


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"e": ["a", "b"], "ts": [T0, T0], "x": [1.0, 2.0]})


@pytest.mark.parametrize(("fn", "message"), [
    (lambda df: 1 / 0, r"transformation 'fxmod.f' raised ZeroDivisionError: division by zero"),
    (lambda df: df.head(1), r"returned 1 rows for 2: it must be row-wise"),
    (lambda df: [1, 2], r"returned list, not a pandas DataFrame"),
])
def test_broken_transformations_are_named(fn, message) -> None:  # noqa: ANN001
    _module("fxmod", f=fn)
    view = resolve_views(_spec([{"name": "v", "transformation": "fxmod.f", "features": ["x"]}]))["v"]
    with pytest.raises(InputError, match=message):
        compute_frame(view, _frame())


def test_missing_function_and_module_are_named() -> None:
    _module("fxmod2")
    with pytest.raises(InputError, match=r"'fxmod2.nope': module 'fxmod2' has no function 'nope'"):
        resolve_views(_spec([{"name": "v", "transformation": "fxmod2.nope", "features": ["x"]}]))
    with pytest.raises(InputError, match=r"cannot import 'no_such_pkg.mod'"):
        resolve_views(_spec([{"name": "v", "transformation": "no_such_pkg.mod.f", "features": ["x"]}]))


def test_missing_columns_are_named() -> None:
    view = resolve_views(_spec([{"name": "v", "features": ["x", "y"], "aggregations": [
        {"column": "z", "functions": ["sum"], "windows": ["1h"]}]}]))["v"]
    with pytest.raises(InputError, match=r"missing column\(s\) y \(feature\), z \(aggregation column\)"):
        compute_frame(view, _frame())


def test_transformation_output_is_a_feature() -> None:
    _module("fxmod3", f=lambda df: df.assign(x2=df["x"] * 2))
    view = resolve_views(_spec([{"name": "v", "transformation": "fxmod3.f", "features": ["x2"]}]))["v"]
    assert compute_frame(view, _frame())["x2"].tolist() == [2.0, 4.0]
    assert view.version == resolve_views(_spec([{"name": "v", "transformation": "fxmod3.f",
                                                 "features": ["x2"]}]))["v"].version


@pytest.mark.parametrize(("features", "message"), [
    ({"views": [{"name": "v", "features": ["x"]}], "services": [{"name": "s", "features": ["v:nope"]}]},
     r"unknown feature 'v:nope'; view 'v' has \['x'\]"),
    ({"views": [{"name": "v", "features": ["x"]}], "services": [{"name": "s", "features": ["w:x"]}]},
     r"'w:x' does not name a feature view"),
    ({"views": [{"name": "v"}]}, r"feature view 'v' has no features"),
    ({"views": [{"name": "v", "features": ["x_sum_1h"], "aggregations": [
        {"column": "x", "functions": ["sum"], "windows": ["1h"]}]}]}, r"appear twice"),
])
def test_spec_errors_name_the_feature(features, message) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        PipelineSpec.model_validate({"name": "fx", "source": {
            "path": "/x", "entity_column": "e", "timestamp_column": "ts"}, "features": features})


def test_count_works_on_text_and_sums_need_numbers() -> None:
    df = pd.DataFrame({"e": ["a", "a", "a"], "ts": [T0, T0 + pd.Timedelta(minutes=1), T0 + pd.Timedelta(
        minutes=2)], "d": ["x", None, "y"]})
    count = resolve_views(_spec([{"name": "v", "aggregations": [
        {"column": "d", "functions": ["count", "last"], "windows": ["1h"]}]}]))["v"]
    got = compute_frame(count, df)
    assert got["d_count_1h"].tolist() == [1.0, 1.0, 2.0] and got["d_last_1h"].tolist() == ["x", "x", "y"]
    summed = resolve_views(_spec([{"name": "v", "aggregations": [
        {"column": "d", "functions": ["sum"], "windows": ["1h"]}]}]))["v"]
    with pytest.raises(InputError, match=r"aggregation \['sum'\] of column 'd' needs numbers"):
        compute_frame(summed, df)


def test_a_feature_may_not_be_a_key_or_the_label() -> None:
    with pytest.raises(ValueError, match=r"\['y'\] is a key, timestamp or label column"):
        PipelineSpec.model_validate({"name": "fx", "source": {
            "path": "/x", "entity_column": "e", "timestamp_column": "ts", "label_column": "y"},
            "features": {"views": [{"name": "v", "features": ["x", "y"]}]}})
