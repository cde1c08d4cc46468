"""A cluster this process starts when it is first needed, or in the background: the dry-run's
scratch cluster. Its first steps need no cluster below the placement thresholds, so a spec
that serves starts it beside them (the rollout will need it) and one that does not starts it
only if a step asks (a sample's run may never need one). Everything that reaches a cluster
(`runtime.connect.connect`, `runtime.dashboard.require_address`) waits for it here first;
without one registered, nothing waits.
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
        self.started = False
        self._lock = threading.Lock()

    def start(self) -> Starting:
        with self._lock:
            if not self.started:
                self.started = True
                self.thread.start()
        return self

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
        self.start()
        self.thread.join()
        if isinstance(self.error, PlatformError):
            raise self.error
        if self.error is not None:
            raise PlatformError(f"the cluster did not start: {type(self.error).__name__}: {self.error}")
        return self.result


_current: Starting | None = None


def register(start: Callable[[], Any], *, now: bool) -> Starting:
    """`start` runs in the background now, or on the first wait for it (`now=False`)."""
    global _current
    _current = Starting(start)
    return _current.start() if now else _current


def wait_until_started() -> None:
    if _current is not None:
        _current.wait()
