"""The package's shape: every module imports on its own, the import graph has no cycles,
and no stage reads another stage's artifact properties by string key (they read the
typed contracts of `mlplatform.artifacts`)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
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


# One interpreter loads the third-party packages once, then forks a child per module that
# imports that module alone: each child starts with no module of ours loaded, so an import that
# only works after another of ours (a hidden order dependency or a cycle) still fails, and the
# check costs ~15 s instead of ~40 (a fresh interpreter per module re-imports Ray and MLflow).
# The parent also loads the third-party submodules many of ours reach (the metadata store's
# Alembic with Mako and Pygments, SQLAlchemy's ORM and dialects, scikit-learn's estimators):
# measured, the children's CPU time went from 31.9 s to 13.5 s for the same 149 modules.
FORK_IMPORT = """
import json, os, sys, traceback
for heavy in ("numpy", "pandas", "pyarrow", "pyarrow.dataset", "scipy.stats", "sklearn", "pydantic",
              "sqlalchemy", "typer", "rich", "yaml", "requests", "ray", "ray.data", "ray.serve",
              "ray.tune", "ray.train", "mlflow", "fastapi", "starlette", "matplotlib",
              "alembic.command", "alembic.config", "alembic.autogenerate", "alembic.runtime.migration",
              "mako.template", "pygments.lexers", "pygments.formatters", "pygments.styles",
              "sqlalchemy.orm", "sqlalchemy.ext.compiler", "sqlalchemy.dialects.sqlite",
              "sqlalchemy.dialects.postgresql", "sqlite3", "timeit", "tomllib", "rich.table",
              "sklearn.pipeline", "sklearn.compose", "sklearn.preprocessing", "sklearn.impute",
              "sklearn.linear_model", "sklearn.metrics", "sklearn.model_selection", "sklearn.ensemble",
              "sklearn.neighbors", "sklearn.svm"):
    __import__(heavy)
ours = [m for m in sys.modules if m.split(".")[0] in ("mlplatform", "serve", "jobs")]
assert not ours, ours
out, running, todo = {}, {}, list(sys.argv[1:])
while todo or running:
    # Two children at a time (the CI machine's cores); each message fits a pipe's buffer, so a
    # child never waits for its pipe to be read and the parent reads it once the child is gone.
    while todo and len(running) < 2:
        module = todo.pop(0)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                __import__(module)
                msg = ""
            except BaseException:
                msg = traceback.format_exc()[-1500:]
            os.write(w, msg.encode())
            os._exit(0)
        os.close(w)
        running[pid] = (module, r)
    pid, status = os.wait()
    module, r = running.pop(pid)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    out[module] = data.decode() or (None if status == 0 else f"the child exited with status {status}")
print(json.dumps(out))
"""


def _import_each_alone(modules: list[str]) -> dict[str, str | None]:
    proc = subprocess.run([sys.executable, "-c", FORK_IMPORT, *modules], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_module_imports_on_its_own() -> None:
    """A module at a time, with none of ours loaded before it: an import that only works after
    another module was imported first (a hidden order dependency or a cycle) fails here."""
    results = _import_each_alone(_modules())
    assert set(results) == set(_modules())
    failures = [f"{m}: {err}" for m, err in results.items() if err]
    assert not failures, "\n\n".join(failures)


def test_an_import_that_needs_another_module_first_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a module that works only once another was imported is reported."""
    pkg = tmp_path / "orderpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import sys\nVALUE = sys.modules['orderpkg.b'].VALUE\n")  # needs b first
    (pkg / "b.py").write_text("VALUE = 1\n")
    proc = subprocess.run([sys.executable, "-c", FORK_IMPORT, "orderpkg.b", "orderpkg.a"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["orderpkg.b"] is None and "KeyError" in results["orderpkg.a"]


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
