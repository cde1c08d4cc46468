"""Feature views and services, resolved from the spec into what the stores need.

A `FeatureView` is the spec's `FeatureViewSpec` with its defaults filled in from the
source (entity and timestamp columns), its TTL in seconds, its transformation loaded,
and a version: a hash of the definition and of the transformation's source code, so
that a model records exactly which feature code produced its training data.

A transformation is code a spec names and the cluster runs, so, like an estimator, it
comes only from the operator's allow-list (settings.transformation_modules, the
cluster's own configuration, never the submitter's) and must be a function defined there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable

import pandas as pd
from pydantic import BaseModel

from mlplatform.artifacts import FeatureViewFields
from mlplatform.errors import InputError
from mlplatform.settings import load_settings, on_allow_list
from mlplatform.spec import FeatureViewSpec, PipelineSpec, duration_seconds

Transformation = Callable[[pd.DataFrame], pd.DataFrame]


class FeatureView(FeatureViewFields):
    """A feature view with every default resolved: what the stores and the CLI work with."""

    @property
    def ttl(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.ttl_s)

    @property
    def key_columns(self) -> list[str]:
        return [self.entity, self.timestamp_column] + (
            [self.created_timestamp_column] if self.created_timestamp_column else [])

    def view_spec(self) -> FeatureViewSpec:
        return FeatureViewSpec.model_validate(self.spec)


class FeatureRef(BaseModel):
    view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


def load_transformation(path: str, view: str, modules: str | None = None) -> Transformation:
    """Import `package.module.function` from the allow-list (`modules`, default: this
    process's settings); a clear error naming the view and the path. Checked before the
    import, since importing runs the module's code, and again in every Ray task that loads
    it, each against its own (the cluster's) configuration."""
    allowed = load_settings().transformation_modules if modules is None else modules
    where = f"feature view {view!r}: transformation {path!r}"
    module_name, _, attr = path.rpartition(".")
    if not module_name or not on_allow_list(module_name, allowed):
        raise InputError(f"{where}: module {module_name or path!r} is not on the transformation "
                         f"allow-list ({allowed}); an operator can extend it with "
                         "PLATFORM_TRANSFORMATION_MODULES")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"feature view {view!r}: transformation {path!r}: cannot import "
                         f"{module_name!r} ({exc})") from None
    except Exception as exc:  # the user's module fails while importing
        raise InputError(f"feature view {view!r}: transformation {path!r}: importing {module_name!r} "
                         f"raised {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn) or inspect.isclass(fn):
        raise InputError(f"{where}: module {module_name!r} has no function {attr!r}"
                         + (f" ({attr!r} is a class)" if inspect.isclass(fn) else ""))
    home = getattr(fn, "__module__", None)
    if not isinstance(home, str) or not on_allow_list(home, allowed):
        # Imported into an allowed module from elsewhere (`from os import system`).
        raise InputError(f"{where}: defined in module {home!r}, which is not on the transformation "
                         f"allow-list ({allowed})")
    return fn  # type: ignore[no-any-return]


def _code_hash(path: str | None, view: str) -> str:
    if path is None:
        return ""
    fn = load_transformation(path, view)
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):  # a builtin or a C function: its name is all we have
        source = path
    return hashlib.sha256(source.encode()).hexdigest()


def resolve_view(spec: PipelineSpec, view: FeatureViewSpec) -> FeatureView:
    src = spec.source
    definition = view.model_dump(mode="json")
    digest = hashlib.sha256(
        (json.dumps(definition, sort_keys=True) + _code_hash(view.transformation, view.name)).encode()
    ).hexdigest()
    return FeatureView(
        pipeline=spec.name,
        name=view.name,
        entity=view.entity or src.entity_column,
        timestamp_column=view.timestamp_column or src.timestamp_column,
        created_timestamp_column=view.created_timestamp_column,
        ttl_s=duration_seconds(view.ttl),
        transformation=view.transformation,
        features=view.feature_names(),
        spec=definition,
        version=digest[:12],
    )


def resolve_views(spec: PipelineSpec) -> dict[str, FeatureView]:
    return {v.name: resolve_view(spec, v) for v in spec.features.views}


def resolve_service(spec: PipelineSpec, views: dict[str, FeatureView],
                    service: str | None) -> tuple[str, list[FeatureRef]]:
    """The features a model uses: a named feature service, or every feature of every view."""
    if service is None:
        return "all_features", [FeatureRef(view=v.name, feature=f)
                                for v in views.values() for f in v.features]
    found = {s.name: s for s in spec.features.services}
    if service not in found:
        raise InputError(f"feature service {service!r} is not defined; the spec has {sorted(found)}")
    return service, parse_refs(found[service].features, views)


def parse_refs(refs: list[str], views: dict[str, FeatureView]) -> list[FeatureRef]:
    """'view:feature' / 'view:*' -> feature references; unknown names are errors."""
    out: list[FeatureRef] = []
    for ref in refs:
        view, _, feature = ref.partition(":")
        if view not in views or not feature:
            raise InputError(f"feature {ref!r}: no feature view {view!r}; views are {sorted(views)}")
        names = views[view].features if feature == "*" else [feature]
        for name in names:
            if name not in views[view].features:
                raise InputError(f"feature {ref!r}: view {view!r} has no feature {name!r}; "
                                 f"it has {views[view].features}")
            out.append(FeatureRef(view=view, feature=name))
    return out


def service_version(views: dict[str, FeatureView], refs: list[FeatureRef]) -> dict[str, str]:
    """The version of each view a set of features comes from (what a model records)."""
    return {r.view: views[r.view].version for r in refs}
