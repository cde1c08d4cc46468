"""The code a spec names (estimator, transformations), checked where the spec is written.

`platformctl spec check` and `platformctl submit` run these checks before any cluster
work, so a spec naming code off the allow-lists, a module that does not import or an
object that is not an estimator or a function fails at once with exit 2, not as a failed
job minutes later. The cluster checks again against its own (the operator's) allow-lists:
this is the early answer, not the boundary.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlplatform.errors import InputError
from mlplatform.settings import Settings
from mlplatform.spec import PipelineSpec
from mlplatform.spec_code_cache import check_key, passed_before, remember_pass
from mlplatform.spec_loader import load_spec


@contextmanager
def _importable_from(folder: Path) -> Iterator[None]:
    """Transformations import from the spec's folder, as a job run there would."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        if entry in sys.path:
            sys.path.remove(entry)


def code_problems(spec: PipelineSpec, settings: Settings, spec_dir: Path) -> list[str]:
    """Every problem with the code the spec names (empty: none)."""
    problems: list[str] = []
    key = check_key(spec.model, settings.estimator_modules)
    if not passed_before(key):
        try:
            # Imported here: scikit-learn is a second of every CLI command's start otherwise.
            from mlplatform.training.estimators import check_model

            check_model(spec.model, settings.estimator_modules)
            remember_pass(key)
        except InputError as exc:
            problems.append(exc.message)
    with _importable_from(spec_dir):
        for i, view in enumerate(spec.features.views):
            if view.transformation is None:
                continue
            try:
                from mlplatform.features.definitions import load_transformation

                load_transformation(view.transformation, view.name, settings.transformation_modules)
            except InputError as exc:
                problems.append(f"features.views[{i}].transformation: {exc.message}")
    return problems


def check_code(spec: PipelineSpec, settings: Settings, spec_dir: Path) -> None:
    problems = code_problems(spec, settings, spec_dir)
    if problems:
        raise InputError("; ".join(problems))


def load_for(spec_file: Path | str, settings: Settings, *, base_dir: Path | None = None
             ) -> PipelineSpec:
    """The spec as a job on this home reads it: `${PLATFORM_HOME}` is the home's folder."""
    return load_spec(spec_file, env={**os.environ, "PLATFORM_HOME": str(settings.home)}, base_dir=base_dir)


def load_checked(spec_file: Path, settings: Settings) -> PipelineSpec:
    """The spec and the code it names, checked before any cluster or store work (exit 2)."""
    spec = load_for(spec_file, settings)
    check_code(spec, settings, spec_file.parent)
    return spec
