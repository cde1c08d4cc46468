"""The shadow path never slows or fails the live path: the offer returns at once, a failing
shadow is counted, and a shadow that falls behind has its copies dropped, not queued."""

from __future__ import annotations

import threading

from serve.shadow import ShadowMirror


def test_a_slow_shadow_never_holds_the_caller_and_drops_beyond_its_backlog() -> None:
    release = threading.Event()
    mirror = ShadowMirror(backlog=3)
    accepted: list[bool] = []
    caller = threading.Thread(target=lambda: accepted.extend(mirror.offer(release.wait) for _ in range(10)))
    caller.start()
    caller.join(timeout=30)  # with the shadow blocked, a caller that waited on it would hang here
    assert not caller.is_alive()
    assert accepted == [True] * 3 + [False] * 7 and mirror.dropped == 7
    release.set()
    mirror.close()
    assert mirror.done == 3 and mirror.pending == 0


def test_a_failing_shadow_is_counted_not_raised() -> None:
    mirror = ShadowMirror()

    def boom() -> None:
        raise ValueError("model exploded")

    assert mirror.offer(boom) and mirror.offer(lambda: None)
    mirror.close()
    assert mirror.errors == 1 and mirror.done == 1
