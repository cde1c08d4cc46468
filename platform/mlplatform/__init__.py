"""mlplatform: an automated MLOps platform on Ray.

The package is the library and control plane; `jobs/` (batch on Ray Jobs) and
`serve/` (online on Ray Serve) are applications built on it.
"""

__version__ = "0.1.0"
