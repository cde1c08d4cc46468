"""Shadow traffic off the response path: a copy of a request goes to one worker thread that
answers it with the shadow version; the response never waits for it.

A bounded backlog is the point: a slow or failing shadow must cost the live path nothing,
so when the worker falls behind, new copies are dropped (and counted) instead of queueing
behind it, and whatever the shadow raises is counted and logged, never re-raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("mlplatform.serve")


class ShadowMirror:
    def __init__(self, backlog: int = 64):
        self.backlog = backlog
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self._lock = threading.Lock()
        self.pending = 0
        self.done = 0
        self.dropped = 0
        self.errors = 0

    def offer(self, work: Callable[[], None], what: str = "shadow") -> bool:
        """Run `work` later on the shadow thread; False (dropped) when the backlog is full."""
        with self._lock:
            if self.pending >= self.backlog:
                self.dropped += 1
                return False
            self.pending += 1

        def run() -> None:
            try:
                work()
                with self._lock:
                    self.done += 1
            except Exception as exc:
                with self._lock:
                    self.errors += 1
                log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
            finally:
                with self._lock:
                    self.pending -= 1

        self._pool.submit(run)
        return True

    def close(self) -> None:
        """Finish what is queued (a graceful shutdown logs the shadow answers too)."""
        self._pool.shutdown(wait=True)
