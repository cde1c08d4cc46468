"""hypothesis against the two commands that read a user's files: `spec check` on mutations of
jobs/examples/demo.yaml (wrong types, unknown keys, out-of-range numbers, deleted keys,
broken YAML) and `validate` on mangled batches (columns dropped, renamed or retyped, nulls,
garbage bytes). Both run in-process (tests.conftest.cli, the real typer app); what they may
answer is what their help says: exit 0 or 2 for `spec check` with each problem naming its
field, 0 / 1 / 2 for `validate`, and never a traceback or an "internal error"."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, cli

DEMO = yaml.safe_load((ROOT / "jobs" / "examples" / "demo.yaml").read_text())
_BAD_OUTPUT = ("Traceback", "internal error", 'File "/')


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of the document (dict keys and list indexes)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(DEMO)
_ODD = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                 st.text(max_size=20), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                 st.sampled_from([-1, 0, 10**9, -0.5, 1.5, 1e308, "30x", "${NOPE}", "7d"]))


def _set(doc: Any, path: tuple, value: Any, *, delete: bool = False) -> None:
    *parents, last = path
    for p in parents:
        doc = doc[p]
    if delete:
        del doc[last]
    else:
        doc[last] = value


@st.composite
def mutated_specs(draw: st.DrawFn) -> tuple[str, str]:
    """(what was done, the YAML text)."""
    doc = copy.deepcopy(DEMO)
    kind = draw(st.sampled_from(["retype", "unknown", "delete", "broken"]))
    path = draw(st.sampled_from(PATHS))
    if kind == "retype":
        _set(doc, path, draw(_ODD))
    elif kind == "unknown":
        target: Any = doc
        for p in path:
            target = target[p] if isinstance(target[p], dict | list) else target
        if isinstance(target, dict):
            target[draw(st.text(alphabet="abcxyz_", min_size=1, max_size=8))] = draw(_ODD)
        else:
            doc[draw(st.text(alphabet="abcxyz_", min_size=1, max_size=8))] = draw(_ODD)
    elif kind == "delete" and path:
        _set(doc, path, None, delete=True)
    text = yaml.safe_dump(doc, sort_keys=False)
    if kind == "broken":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from([":", "\t", "- ", "{", "]", "&a", "*b", "\x00", "'",
                                     "!!python/object:os.system"]))
        text = text[:at] + junk + text[at:]
    return f"{kind} {'.'.join(map(str, path))}", text


def _located(issue: dict[str, Any]) -> bool:
    return bool(issue.get("path") or issue.get("line")
                or re.search(r"line \d+|position \d+", issue["message"]))


def test_spec_check_on_mutated_specs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    counts = {0: 0, 2: 0}
    file = tmp_path / "spec.yaml"

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(mutated_specs())
    def one(case: tuple[str, str]) -> None:
        what, text = case
        file.write_text(text, errors="surrogateescape")
        result = cli("spec", "check", str(file), "--json")
        shown = f"{what}: exit {result.returncode}\n{result.stdout[-800:]}{result.stderr[-800:]}"
        assert result.returncode in (0, 2), shown
        assert not any(m in result.stdout + result.stderr for m in _BAD_OUTPUT), shown
        counts[result.returncode] += 1
        if result.returncode == 2:
            errors = json.loads(result.stdout)["errors"]
            # Each problem names where it is: a field path, or a line (position) of the YAML.
            assert errors and all(_located(e) for e in errors), shown

    one()
    with capsys.disabled():
        print(f"\nspec check fuzz: {sum(counts.values())} specs, {counts[0]} valid (exit 0), "
              f"{counts[2]} refused (exit 2)")
    assert counts[2] > 0


# ------------------------------------------------------------------------------------ batches
@pytest.fixture(scope="module")
def clean_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path, Path]:
    """A small demo batch, its schema (inferred from it) and a spec whose source is that batch."""
    import pyarrow as pa

    from mlplatform.data.schema import infer_schema, schema_yaml
    from mlplatform.data.synthetic import DemoDataConfig, generate_day

    folder = tmp_path_factory.mktemp("fuzz-batch")
    df = generate_day(DemoDataConfig(days=1, rows_per_day=200, entities=50), 1)
    schema, notes = infer_schema(pa.Table.from_pandas(df, preserve_index=False), entity="customer_id",
                                 timestamp="event_ts", label="churned")
    (folder / "schema.yaml").write_text(schema_yaml(schema, notes))
    spec = copy.deepcopy(DEMO)
    spec["source"]["path"] = str(folder / "data")
    spec.pop("deploy")
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return df, folder / "spec.yaml", folder / "schema.yaml"


@st.composite
def mangled(draw: st.DrawFn, df: pd.DataFrame) -> tuple[str, pd.DataFrame | bytes, str]:
    """(what was done, a frame or raw bytes, the format to write it in)."""
    fmt = draw(st.sampled_from(["parquet", "csv"]))
    if draw(st.integers(0, 9)) == 0:
        return "garbage bytes", draw(st.binary(min_size=0, max_size=200)), fmt
    out = df.copy()
    done = []
    cols = list(out.columns)
    for _ in range(draw(st.integers(1, 3))):
        col = draw(st.sampled_from(cols))
        if col not in out.columns:
            continue
        op = draw(st.sampled_from(["drop", "rename", "str", "float", "nulls", "bool"]))
        done.append(f"{op} {col}")
        if op == "drop":
            out = out.drop(columns=col)
        elif op == "rename":
            out = out.rename(columns={col: col + "_x"})
        elif op == "str":
            out[col] = out[col].astype(str)
        elif op == "float":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64") * 1e300
        elif op == "nulls":
            out[col] = out[col].where(np.arange(len(out)) % 2 == 0)
        else:
            out[col] = np.arange(len(out)) % 2 == 0
    if draw(st.booleans()):
        out = out.head(draw(st.integers(0, 3)))
        done.append(f"{len(out)} rows")
    return ", ".join(done), out, fmt


@pytest.mark.ray
def test_validate_on_mangled_batches(ray_connected, clean_batch, tmp_path: Path,  # noqa: ANN001
                                     capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # The commands run in this process (CliRunner swaps stderr per call): Ray Data's log handler
    # keeps the first call's stream, and logging prints "--- Logging error ---" with a traceback
    # when it writes to it after it closed. Not the platform's output, and no user's process
    # swaps its stderr: logging's production setting drops handler errors.
    import logging

    monkeypatch.setattr(logging, "raiseExceptions", False)
    df, spec_file, schema_file = clean_batch
    counts = {0: 0, 1: 0, 2: 0}
    n = [0]

    @settings(max_examples=20, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data: st.DataObject) -> None:
        what, batch, fmt = data.draw(mangled(df))
        n[0] += 1
        path = tmp_path / f"b{n[0]}.{fmt}"
        if isinstance(batch, bytes):
            path.write_bytes(batch)
        elif fmt == "parquet":
            batch.to_parquet(path, index=False)
        else:
            batch.to_csv(path, index=False)
        spec_text = spec_file.read_text().replace("format: parquet", f"format: {fmt}")
        spec = tmp_path / f"spec-{fmt}.yaml"
        spec.write_text(spec_text)
        result = cli("validate", str(spec), "--batch", str(path), "--schema", str(schema_file), "--json",
                     "--out", str(tmp_path / f"out{n[0]}"))
        shown = f"{what} ({fmt}): exit {result.returncode}\n{result.stdout[-800:]}{result.stderr[-800:]}"
        assert result.returncode in (0, 1, 2), shown
        assert not any(m in result.stdout + result.stderr for m in _BAD_OUTPUT), shown
        counts[result.returncode] += 1

    one()
    with capsys.disabled():
        print(f"\nvalidate fuzz: {sum(counts.values())} batches: {counts[0]} passed (exit 0), "
              f"{counts[1]} rejected (exit 1), {counts[2]} unusable input (exit 2)")
    assert counts[1] + counts[2] > 0
