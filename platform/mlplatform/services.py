"""The platform's services, built once from `Settings`: one place, for every caller.

A pipeline step gets them on its context, the CLI builds them per command, and the Serve
application will build them in its replicas: the metadata store, the MLflow model
registry, the feature store of a pipeline, artifact storage and the Ray connection.
Heavy clients (MLflow, Ray) are created on first use, so a command that needs only the
metadata store does not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from mlplatform import storage
from mlplatform.metadata.store import MetadataStore
from mlplatform.settings import Settings, apply_store_env, load_settings

if TYPE_CHECKING:
    from mlplatform.features.store import FeatureStore
    from mlplatform.models.registry import ModelRegistry
    from mlplatform.spec import PipelineSpec


class Services:
    """The stores, the registry and the Ray connection of one platform installation."""

    def __init__(self, settings: Settings):
        self.settings = settings
        apply_store_env(settings)  # connect timeouts, the S3 endpoint: before any client exists

    @classmethod
    def from_env(cls, *, address: str | None = None) -> Services:
        return cls(load_settings(address=address))

    @cached_property
    def metadata(self) -> MetadataStore:
        return MetadataStore(self.settings.metadata_url)

    @cached_property
    def models(self) -> ModelRegistry:
        from mlplatform.models.registry import ModelRegistry

        return ModelRegistry(self.settings, self.metadata)

    def feature_store(self, spec: PipelineSpec, *, online_url: str | None = None) -> FeatureStore:
        from mlplatform.features.store import FeatureStore

        return FeatureStore(spec, self.settings, online_url=online_url)

    def storage(self, *parts: str) -> tuple[pafs.FileSystem, str]:
        """A location under the storage URI, as (filesystem, path): what tasks on any node read."""
        self._storage_usable  # noqa: B018 - once: s3:// without credentials fails naming the setting
        return storage.resolve(self.storage_uri(*parts))

    @cached_property
    def _storage_usable(self) -> bool:
        from mlplatform.store_checks import require_storage

        require_storage(self.settings)
        return True

    def storage_uri(self, *parts: str) -> str:
        return storage.join(self.settings.storage_uri, *parts) if parts else self.settings.storage_uri

    def connect_ray(self, *, allow_private: bool = False,
                    announce: Callable[[str], None] | None = None) -> None:
        """Connect to the configured cluster; never starts one unless `allow_private` (by hand)."""
        from mlplatform.runtime.connect import connect

        connect(self.settings, allow_private=allow_private, announce=announce)
