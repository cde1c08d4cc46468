"""The package's shape: every module imports on its own, the import graph has no cycles,
and no stage reads another stage's artifact properties by string key (they read the
typed contracts of `mlplatform.artifacts`)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "platform" / "mlplatform"


def _modules() -> list[str]:
    names = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module -> the mlplatform modules it imports at import time (module level, not under
    TYPE_CHECKING, not inside functions: those run later and cannot deadlock an import)."""
    modules = set(_modules())
    graph: dict[str, set[str]] = {}
    for name in modules:
        path = PKG.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PKG.parent / name.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, node)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("mlplatform"):
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if m == "mlplatform":  # the package's __init__ imports nothing of its own
                continue
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_the_import_graph_has_no_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a graph with a cycle is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _import_alone(module: str) -> str | None:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    return None if proc.returncode == 0 else f"{module}: {proc.stderr.strip()[-1500:]}"


def test_every_module_imports_on_its_own() -> None:
    """A fresh interpreter per module: an import that only works after another module was
    imported first (a hidden order dependency or a cycle) fails here."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        failures = [f for f in pool.map(_import_alone, _modules()) if f]
    assert not failures, "\n\n".join(failures)


# Reading an artifact's (or run's) properties dict by key, e.g. `art.properties["rows"]`,
# `a.properties.get("x")`, or `p = art.properties` then `p["x"]`.
PROPERTY_READ = re.compile(r"\.properties\s*(\[|\.get\(|$)|=\s*\w+\.properties\b")
# Where a properties dict legitimately lives: the store that persists it and the
# contracts that turn it into typed models.
ALLOWED = {"metadata", "artifacts.py"}


def test_no_stage_reads_properties_by_string_key() -> None:
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ALLOWED:
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if PROPERTY_READ.search(line.split("#", 1)[0]):
                offenders.append(f"{rel}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_property_read_pattern_catches_the_forms_it_forbids() -> None:
    for line in ('n = art.properties["rows"]', 'x = a.properties.get("rows")', "p = art.properties",
                 "for k in art.properties"):
        assert PROPERTY_READ.search(line), line
    assert not PROPERTY_READ.search("rows = art.rows")


def test_the_library_never_imports_its_applications() -> None:
    """`mlplatform` is the library; `jobs/` and `serve/` are applications built on it, which it
    names only by import path (DESIGN.md, Layering). An import the other way would make the
    control plane load Serve's ingress (and FastAPI) and tie the layers into a cycle."""
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] in ("serve", "jobs")]
    assert not offenders, offenders
