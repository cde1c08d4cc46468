"""The alert webhook (PLATFORM_ALERT_WEBHOOK): each alert POSTed as JSON, in the background.

A pipeline must never fail or wait because a chat server or an incident tool is down, so the
POST runs in a daemon thread with a short timeout and a few retries (connection errors,
timeouts, 429 and 5xx: what a retry can fix; another 4xx will not get better). The outcome,
"sent" or "failed: <reason>", is written to the alert's row (`notified`), where
`platformctl alerts list` shows it.

A short-lived process (a job driver, a CLI call) may exit before a thread is done: `flush`
waits for the pending ones, and an atexit hook does so with a small bound, so a notification
is rarely lost and an exit is never held for long.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import re
import threading
import time
from typing import Any

import requests
from pydantic import BaseModel

from mlplatform.metadata.schema import AlertRow
from mlplatform.metadata.store import Alert, MetadataStore
from mlplatform.redact import redact_text

log = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT_S = 3.0  # per attempt (connect and read)
BACKOFF_S = 0.5  # before the 2nd attempt; doubled before each further one
ATEXIT_FLUSH_S = 5.0  # the most a process's exit waits for notifications still in flight
RETRY_STATUS = frozenset({429}) | frozenset(range(500, 600))

_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")

_lock = threading.Lock()
# A run that sets 200 files aside raises 200 alerts: at most this many POSTs at a time.
_sending = threading.BoundedSemaphore(4)
_pending: set[threading.Thread] = set()


class AlertPayload(BaseModel):
    """The JSON body the webhook receives: the alert, without the ack bookkeeping."""

    id: int
    created_at: dt.datetime
    pipeline: str
    source: str
    kind: str
    severity: str
    message: str
    run_id: str | None
    step: str | None
    link: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, alert: Alert) -> AlertPayload:
        return cls.model_validate(alert.model_dump())


def _short_reason(exc: requests.RequestException) -> str:
    """urllib3 nests its reason in a long repr; the OS error at its end is what a person needs."""
    text = str(exc)
    errno = _ERRNO.search(text)
    if errno:
        text = errno.group(0).strip()
    return f"{type(exc).__name__}: {text[:200]}"


def send(url: str, payload: AlertPayload, *, attempts: int | None = None, timeout_s: float | None = None,
         backoff_s: float | None = None) -> str:
    """POST `payload` to `url`, retrying what a retry can fix. Returns "sent" or "failed: <reason>";
    never raises (the reason is masked: a webhook URL may carry a token)."""
    # The module's values at call time (not bound at import), so an operator or a test can tune them.
    attempts = ATTEMPTS if attempts is None else attempts
    timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    body = payload.model_dump(mode="json")
    reason = "not attempted"
    for attempt in range(1, max(1, attempts) + 1):
        if attempt > 1:
            time.sleep(backoff_s * 2 ** (attempt - 2))
        try:
            response = requests.post(url, json=body, timeout=timeout_s)
        except requests.RequestException as exc:
            reason = _short_reason(exc)
            continue
        if response.ok:
            return "sent"
        reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
        if response.status_code not in RETRY_STATUS:
            break
    return redact_text(f"failed: {reason} (after {attempt} attempt{'s' if attempt > 1 else ''})")


def _record(store: MetadataStore, alert_id: int, outcome: str) -> None:
    try:
        with store.session() as s:
            row = s.get(AlertRow, alert_id)
            if row is not None:
                row.notified = outcome
    except Exception as exc:  # the store being down must not surface in a background thread
        log.warning("alert %s: could not record the webhook outcome %r: %s", alert_id, outcome, exc)


def _deliver(store: MetadataStore, url: str, payload: AlertPayload) -> None:
    try:
        with _sending:
            outcome = send(url, payload)
    except Exception as exc:  # a bug: still record something, never kill the caller's process
        outcome = redact_text(f"failed: {type(exc).__name__}: {exc}")
    if outcome != "sent":
        log.warning("alert %s: webhook %s", payload.id, outcome)
    _record(store, payload.id, outcome)
    with _lock:
        _pending.discard(threading.current_thread())


def notify(store: MetadataStore, url: str, alert: Alert) -> threading.Thread:
    """Send `alert` to the webhook in a daemon thread; returns at once."""
    thread = threading.Thread(target=_deliver, args=(store, url, AlertPayload.of(alert)),
                              name=f"alert-webhook-{alert.id}", daemon=True)
    with _lock:
        _pending.add(thread)
    thread.start()
    return thread


def pending() -> int:
    """How many notifications are still in flight in this process."""
    with _lock:
        return len(_pending)


def flush(timeout_s: float = ATEXIT_FLUSH_S) -> bool:
    """Wait up to `timeout_s` for the notifications in flight; True if none is left.

    For short-lived processes (a job driver before it exits): daemon threads die with the
    process, and with them a notification not yet sent.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with _lock:
            threads = list(_pending)
        if not threads:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        threads[0].join(left)
        if not threads[0].is_alive():
            with _lock:  # it removes itself, unless it died before it could
                _pending.discard(threads[0])


atexit.register(flush, ATEXIT_FLUSH_S)
