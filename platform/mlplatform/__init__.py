"""mlplatform: an automated MLOps platform on Ray.

The package is the library and control plane; `jobs/` (batch on Ray Jobs) and
`serve/` (online on Ray Serve) are applications built on it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplatform.sdk import Platform

__all__ = ["__version__", "connect"]


def connect(*, address: str | None = None, writable: bool = False, user: str | None = None,
            env: dict[str, str] | None = None) -> Platform:
    """The SDK's entry point (mlplatform.sdk.connect), imported on first use so that
    `import mlplatform` stays as light as the CLI needs it."""
    from mlplatform.sdk import connect as _connect

    return _connect(address=address, writable=writable, user=user, env=env)
