"""A remembered pass of a spec's model check, so `platformctl submit` need not import the estimator.

`training.estimators.check_model` imports the named estimator's package to check the class and
its parameters. For scikit-learn that import was 1-2.5 s of every `submit` on 2 cores, the
largest part of the CLI's share of a small run (issue 15), spent again on every run of an
unchanged spec. The check is a function of the model section, the allow-list, the installed
package and the checker's own code, so a pass is remembered under a key of exactly those and
reused; any change to one of them is a new key, and the check runs again. Only passes are
remembered: a failing spec is checked (and explained) every time.

Only packages installed into a site-packages folder take part: `pip install` rewrites their
`__init__.py`, so its modification time and size name the installed release. An editable or
path install (someone's estimator under development) changes without that, so it is always
checked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

from mlplatform.settings import user_cache_dir
from mlplatform.spec import ModelSpec

_CHECKER = Path(__file__).resolve().parent / "training" / "estimators.py"
_INSTALLED = ("site-packages", "dist-packages")


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"


def check_key(model: ModelSpec, modules: str) -> str | None:
    """The key of this check, or None when its outcome cannot be named (not an installed package)."""
    top = model.estimator.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top)  # a top-level name: found without importing it
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return None
    origin = Path(found.origin)
    if not any(part in _INSTALLED for part in origin.parts):
        return None
    try:
        parts = [model.model_dump_json(), modules, sys.version, _stamp(origin), _stamp(_CHECKER)]
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _entry(key: str) -> Path:
    """In the user's cache folder (XDG), not PLATFORM_HOME: a key names its inputs whatever the
    home, and a command refused before it touches the home (a remote cluster with local stores)
    leaves nothing there."""
    return user_cache_dir() / "model-checks" / key


def passed_before(key: str | None) -> bool:
    return key is not None and _entry(key).is_file()


def remember_pass(key: str | None) -> None:
    """Record a pass; a cache that cannot be written only means the next check runs in full."""
    if key is None:
        return
    path = _entry(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("passed\n")
    except OSError:
        pass
