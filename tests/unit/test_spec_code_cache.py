"""`platformctl submit` checks a spec's estimator without importing its package again when the
same check passed before on the same install: the pass is remembered under a key of the model
section, the allow-list, the installed package and the checker. Anything else is checked in full.

The estimator here is a package of the test's own, "installed" into a site-packages folder under
tmp_path, so the test can change it the way `pip install` would and see the check notice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ESTIMATOR = """
from sklearn.base import BaseEstimator, ClassifierMixin
IMPORTS = __import__("pathlib").Path(__file__).with_name("imports.log")
IMPORTS.open("a").write("imported\\n")

class TinyClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, depth=3):
        self.depth = depth

    def fit(self, X, y):
        return self
"""

# Runs code_problems for a spec naming tinyest.TinyClassifier in a fresh interpreter (a CLI
# command's process); prints the problems and whether the estimator's package was imported.
CHECK = """
import json, sys
from pathlib import Path
from mlplatform.settings import load_settings
from mlplatform.spec_code import code_problems
from mlplatform.spec_loader import load_spec
spec = load_spec(Path(sys.argv[1]))
problems = code_problems(spec, load_settings(), Path(sys.argv[1]).parent)
print(json.dumps({"problems": problems, "imported": "tinyest" in sys.modules,
                  "sklearn": "sklearn" in sys.modules}))
"""


def _spec(folder: Path, params: dict[str, object]) -> Path:
    """The smallest spec (tests/unit/test_spec.py's) with the test's estimator."""
    path = folder / "spec.yaml"
    path.write_text("name: p\nsource: {path: d, entity_column: id, timestamp_column: ts}\n"
                    f"model: {{estimator: tinyest.TinyClassifier, params: {json.dumps(params)}}}\n")
    return path


def _check(spec: Path, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHECK, str(spec)], env=env, capture_output=True,
                         text=True, timeout=120, cwd=spec.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    site = tmp_path / "lib" / "site-packages"
    (site / "tinyest").mkdir(parents=True)
    (site / "tinyest" / "__init__.py").write_text(textwrap.dedent(ESTIMATOR))
    env = {**os.environ, "PLATFORM_HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PLATFORM_ESTIMATOR_MODULES": "tinyest",
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "platform"), str(ROOT)])}
    return site / "tinyest", env


def test_a_passed_check_is_not_repeated_on_the_same_install(installed: tuple[Path, dict[str, str]],
                                                            tmp_path: Path) -> None:
    package, env = installed
    spec = _spec(tmp_path, {"depth": 5})
    first = _check(spec, env)
    assert first == {"problems": [], "imported": True, "sklearn": True}
    again = _check(spec, env)
    assert again == {"problems": [], "imported": False, "sklearn": False}
    assert (package / "imports.log").read_text().count("imported") == 1


def test_a_reinstalled_package_is_checked_again(installed: tuple[Path, dict[str, str]],
                                                tmp_path: Path) -> None:
    package, env = installed
    spec = _spec(tmp_path, {"depth": 5})
    assert _check(spec, env)["problems"] == []
    # A new release without the class: `pip install` rewrites the package's files.
    (package / "__init__.py").write_text("VERSION = 2\n")
    problems = _check(spec, env)["problems"]
    assert len(problems) == 1 and "tinyest.TinyClassifier" in problems[0], problems


def test_another_model_section_or_allow_list_is_checked_in_full(installed: tuple[Path, dict[str, str]],
                                                                tmp_path: Path) -> None:
    _, env = installed
    assert _check(_spec(tmp_path, {"depth": 5}), env)["problems"] == []
    wrong = _check(_spec(tmp_path, {"dept": 5}), env)  # a parameter the class does not take
    assert wrong["imported"] and len(wrong["problems"]) == 1 and "dept" in wrong["problems"][0]
    again = _check(_spec(tmp_path, {"dept": 5}), env)  # a failure is never remembered
    assert again["imported"] and again["problems"] == wrong["problems"]
    closed = _check(_spec(tmp_path, {"depth": 5}), {**env, "PLATFORM_ESTIMATOR_MODULES": "sklearn"})
    assert len(closed["problems"]) == 1 and "allow-list" in closed["problems"][0]


def test_a_package_outside_site_packages_is_always_checked(tmp_path: Path) -> None:
    """An editable or path install changes without a reinstall: nothing of it is remembered."""
    src = tmp_path / "src" / "tinyest"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text(textwrap.dedent(ESTIMATOR))
    env = {**os.environ, "PLATFORM_HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PLATFORM_ESTIMATOR_MODULES": "tinyest",
           "PYTHONPATH": os.pathsep.join([str(src.parent), str(ROOT / "platform"), str(ROOT)])}
    spec = _spec(tmp_path, {"depth": 5})
    assert [_check(spec, env)["imported"] for _ in range(2)] == [True, True]


def test_reading_a_spec_imports_neither_scikit_learn_nor_scipy(tmp_path: Path) -> None:
    """Every command that reads a spec (submit, status, runs...) would pay their import."""
    code = ("import sys; from mlplatform.spec_loader import load_spec; load_spec(sys.argv[1]); "
            "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    spec = _spec(tmp_path, {"depth": 5})
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PLATFORM_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
