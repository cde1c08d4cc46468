"""A cluster this process is still starting in the background: the dry-run starts its scratch
cluster while its first steps run (they need no cluster below the placement thresholds), so
the cluster's start-up overlaps them instead of coming first. Everything that reaches a
cluster (`runtime.connect.connect`, `runtime.dashboard.require_address`) waits for it here
first; without one started this way, nothing waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from mlplatform.errors import PlatformError


class Starting:
    def __init__(self, start: Callable[[], Any]):
        self._start = start
        self.result: Any = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._run, name="cluster-start", daemon=True)

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            self.result = self._start()
        except BaseException as exc:  # noqa: BLE001 - raised in the thread that waits for it
            self.error = exc
        self.seconds = time.perf_counter() - began

    def wait(self) -> Any:
        if threading.current_thread() is self.thread:
            return None  # the start itself asks the cluster whether it is up yet
        self.thread.join()
        if isinstance(self.error, PlatformError):
            raise self.error
        if self.error is not None:
            raise PlatformError(f"the cluster did not start: {type(self.error).__name__}: {self.error}")
        return self.result


_current: Starting | None = None


def start_in_background(start: Callable[[], Any]) -> Starting:
    global _current
    _current = Starting(start)
    _current.thread.start()
    return _current


def wait_until_started() -> None:
    if _current is not None:
        _current.wait()
