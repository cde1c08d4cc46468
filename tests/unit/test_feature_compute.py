"""Feature computation: windowed aggregations against a brute-force definition, and the
errors a user gets for a broken view or transformation."""

from __future__ import annotations

import inspect
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
from mlplatform.features.definitions import load_transformation, resolve_views
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


def test_arrow_backed_keys_aggregate_as_plain_ones() -> None:
    """Ray Data hands featurize's batches over with Arrow-backed strings: same windows."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"e": rng.choice(["a", "b", "c", None], 300),
                       "ts": T0 + pd.to_timedelta(rng.integers(0, 120, 300), unit="m"),
                       "x": rng.normal(size=300)})
    view = resolve_views(_spec([AGG_VIEW]))["v"]
    plain = compute_frame(view, df)
    arrow = compute_frame(view, df.astype({"e": "string[pyarrow]"}))
    assert len(plain) == len(arrow) == int(df.e.notna().sum())
    for col in [c for c in plain.columns if c.startswith("x_")]:
        np.testing.assert_allclose(arrow[col].to_numpy("float64"), plain[col].to_numpy("float64"),
                                   err_msg=col)


def _module(name: str, **fns) -> None:  # noqa: ANN003
    mod = types.ModuleType(name)
    for k, v in fns.items():
        if inspect.isfunction(v):
            v.__module__ = name  # as if defined there (the allow-list checks where a function lives)
        setattr(mod, k, v)
    sys.modules[name] = mod


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"e": ["a", "b"], "ts": [T0, T0], "x": [1.0, 2.0]})


@pytest.mark.parametrize(("fn", "message"), [
    (lambda df: 1 / 0, r"transformation 'tests.fxmod.f' raised ZeroDivisionError: division by zero"),
    (lambda df: df.head(1), r"returned 1 rows for 2: it must be row-wise"),
    (lambda df: [1, 2], r"returned list, not a pandas DataFrame"),
])
def test_broken_transformations_are_named(fn, message) -> None:  # noqa: ANN001
    _module("tests.fxmod", f=fn)
    view = resolve_views(_spec([{"name": "v", "transformation": "tests.fxmod.f", "features": ["x"]}]))["v"]
    with pytest.raises(InputError, match=message):
        compute_frame(view, _frame())


def test_missing_function_and_module_are_named() -> None:
    _module("tests.fxmod2")
    with pytest.raises(InputError, match=r"'tests.fxmod2.nope': module 'tests.fxmod2' has no function "
                                         r"'nope'"):
        resolve_views(_spec([{"name": "v", "transformation": "tests.fxmod2.nope", "features": ["x"]}]))
    with pytest.raises(InputError, match=r"cannot import 'tests.no_such_pkg.mod'"):
        resolve_views(_spec([{"name": "v", "transformation": "tests.no_such_pkg.mod.f", "features": ["x"]}]))


def test_transformations_come_only_from_the_operators_allow_list(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A spec names code the cluster runs: a module off PLATFORM_TRANSFORMATION_MODULES is refused
    before it is imported (importing runs its code), naming the view, the path and the setting."""
    monkeypatch.setenv("PLATFORM_TRANSFORMATION_MODULES", "jobs")
    _module("tests.fxmod4", f=lambda df: df.assign(x=df["x"] + 1))
    monkeypatch.delitem(sys.modules, "this", raising=False)  # importing `this` prints the Zen of Python
    for path, module in (("os.system", "os"), ("this.s", "this"), ("tests.fxmod4.f", "tests.fxmod4")):
        with pytest.raises(InputError, match=rf"feature view 'v': transformation '{path}': module "
                                             rf"'{module}' is not on the transformation allow-list "
                                             r"\(jobs\); .*PLATFORM_TRANSFORMATION_MODULES"):
            resolve_views(_spec([{"name": "v", "transformation": path, "features": ["x"]}]))
    assert "this" not in sys.modules and "Beautiful is better" not in capsys.readouterr().out
    # On the list, a plain function defined there works.
    monkeypatch.setenv("PLATFORM_TRANSFORMATION_MODULES", "jobs, tests.fxmod4")
    view = resolve_views(_spec([{"name": "v", "transformation": "tests.fxmod4.f", "features": ["x"]}]))["v"]
    assert compute_frame(view, _frame())["x"].tolist() == [2.0, 3.0]
    # The demo's own feature code is on the default list.
    monkeypatch.delenv("PLATFORM_TRANSFORMATION_MODULES")
    assert load_transformation("jobs.examples.demo_features.activity", "v").__name__ == "activity"


def test_a_transformation_must_be_a_function_defined_on_the_allow_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    class Maker:
        def __init__(self, df: pd.DataFrame) -> None:
            raise AssertionError("a class named as a transformation must never be called")

    _module("tests.fxmod5", Maker=Maker, system=os.system, value=3)
    monkeypatch.setenv("PLATFORM_TRANSFORMATION_MODULES", "tests")
    with pytest.raises(InputError, match=r"'tests.fxmod5.Maker': module 'tests.fxmod5' has no function "
                                         r"'Maker' \('Maker' is a class\)"):
        load_transformation("tests.fxmod5.Maker", "v")
    with pytest.raises(InputError, match=r"'tests.fxmod5.value': module 'tests.fxmod5' has no function"):
        load_transformation("tests.fxmod5.value", "v")
    # Re-exported into an allowed module from elsewhere: refused by where it is defined.
    with pytest.raises(InputError, match=r"'tests.fxmod5.system': defined in module '(posix|nt|os)', "
                                         r"which is not on the transformation allow-list \(tests\)"):
        load_transformation("tests.fxmod5.system", "v")
