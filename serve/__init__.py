"""The Ray Serve application of mlplatform: ingress, routing, model hosting.

Importing this package is the first thing of ours a Serve replica and an application's build
task do (Serve imports `serve.app`), so it raises the collector's thresholds here, before
serve.app's imports: see mlplatform.process_start.
"""

from mlplatform.process_start import raise_gc_thresholds

raise_gc_thresholds()
