"""Which feature views exist: the featurize step records each view's resolved
definition (with its version) in the metadata store, so the CLI can list, show and
read views without the spec at hand, like Feast's registry."""

from __future__ import annotations

from mlplatform.artifacts import FeatureViewDefinition
from mlplatform.errors import InputError
from mlplatform.features.definitions import FeatureView
from mlplatform.metadata.store import MetadataStore


class RegisteredView(FeatureView):
    run_id: str
    versions: list[str]


def registered_views(store: MetadataStore, pipeline: str | None = None) -> list[RegisteredView]:
    """The newest definition of each (pipeline, view), with every version seen."""
    latest: dict[tuple[str, str], RegisteredView] = {}
    for pipe, run, art in store.outputs_of(FeatureViewDefinition, pipeline=pipeline, step="featurize"):
        view = FeatureView.model_validate(art.model_dump(exclude={"id", "uri", "content_hash"}))
        key = (pipe, view.name)
        if key not in latest:
            latest[key] = RegisteredView(**view.model_dump(), run_id=run, versions=[view.version])
        elif view.version not in latest[key].versions:
            latest[key].versions.append(view.version)
    return sorted(latest.values(), key=lambda v: (v.pipeline, v.name))


def find_view(store: MetadataStore, name: str, pipeline: str | None = None) -> RegisteredView:
    views = registered_views(store, pipeline)
    found = [v for v in views if v.name == name]
    if not found:
        known = ", ".join(f"{v.pipeline}/{v.name}" for v in views) or "none yet (run featurize first)"
        raise InputError(f"feature view {name!r} is not registered"
                         f"{f' in pipeline {pipeline!r}' if pipeline else ''}; registered: {known}")
    if len(found) > 1:
        raise InputError(f"feature view {name!r} exists in pipelines "
                         f"{sorted(v.pipeline for v in found)}: pass --pipeline")
    return found[0]
