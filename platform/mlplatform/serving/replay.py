"""Live traffic for the demo, the rollout tests and the benchmark: rows a version has never
trained on, sent over real HTTP one request per row (as online callers do), and their true
labels fed back a moment later, as a business would report outcomes.

The rows are the newest part of a training set (the evaluation's time-split holdout: unseen
by the model trained on it and by the champion before it), with their labels.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import requests

from mlplatform.artifacts import ModelVersion, TrainingSet
from mlplatform.errors import PlatformError
from mlplatform.services import Services
from mlplatform.serving.infra import json_value
from mlplatform.training.data import load_frame


def holdout_rows(services: Services, name: str, version: str, fraction: float = 0.2
                 ) -> tuple[list[dict[str, Any]], list[Any]]:
    """The newest `fraction` of the version's training set: (JSON-ready feature rows, labels)."""
    mv = services.metadata.find(ModelVersion, f"models:/{name}/{version}")
    ts = services.metadata.get(TrainingSet, mv.training_set_id) if mv and mv.training_set_id else None
    if ts is None or ts.label is None:
        raise PlatformError(f"{name} v{version}: no labelled training set recorded")
    df = load_frame(ts.uri, ts.content_hash)
    if ts.timestamp and ts.timestamp in df.columns:
        df = df.sort_values(ts.timestamp, kind="stable")
    tail = df.iloc[int(len(df) * (1 - fraction)):]
    rows = [{k: json_value(v) for k, v in r.items()} for r in tail[ts.features].to_dict("records")]
    return rows, [json_value(v) for v in tail[ts.label]]


@dataclass
class ReplayStats:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    feedback: int = 0
    failures: list[tuple[float, int, str]] = field(default_factory=list)  # (time, status, body)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500 or s == 0)


class Replay:
    """Clients in threads, each sending `rows_per_request[i]` rows per request (default one, as
    online callers do) and posting the labels of what it got back in batches of
    `feedback_batch` to /feedback. A client sending batches gives an A/B test its samples
    many times faster on a small machine; `stats.sent` counts requests, `stats.versions` rows."""

    def __init__(self, base_url: str, rows: list[dict[str, Any]], labels: list[Any], *,
                 clients: int = 2, rows_per_request: list[int] | None = None, feedback: bool = True,
                 feedback_batch: int = 50, rate_per_client: float | None = None, seed: int = 0):
        if not rows:
            raise PlatformError("no rows to replay")
        self.base_url = base_url.rstrip("/")
        self.rows, self.labels = rows, labels
        self.sizes = rows_per_request or [1] * clients
        self.clients, self.feedback, self.batch = len(self.sizes), feedback, feedback_batch
        self.interval = 1.0 / rate_per_client if rate_per_client else 0.0
        self.seed = seed
        self.stats = ReplayStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Replay:
        for i in range(self.clients):
            t = threading.Thread(target=self._client, args=(i,), daemon=True, name=f"replay-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> ReplayStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.stats

    def _client(self, i: int) -> None:
        rng = np.random.default_rng([self.seed, i])
        session = requests.Session()
        pending: list[dict[str, Any]] = []
        size = self.sizes[i]
        while not self._stop.is_set():
            picks = [int(k) for k in rng.integers(len(self.rows), size=size)]
            t0 = time.perf_counter()
            try:
                resp = session.post(f"{self.base_url}/predict", json={"rows": [self.rows[k] for k in picks]},
                                    timeout=30)
                status, body = resp.status_code, resp.text
            except requests.RequestException as exc:
                status, body = 0, str(exc)
            with self._lock:
                self.stats.sent += 1
                self.stats.statuses[status] += 1
                if status >= 500 or status == 0:
                    self.stats.failures.append((time.time(), status, body[:300]))
            if status == 200:
                answers = resp.json()["predictions"]
                with self._lock:
                    for answer in answers:
                        self.stats.versions[answer["version"]] += 1
                if self.feedback:
                    pending += [{"request_id": a["request_id"], "label": self.labels[k]}
                                for a, k in zip(answers, picks, strict=True) if self.labels[k] is not None]
            if len(pending) >= self.batch:
                self._send_feedback(session, pending)
                pending = []
            if self.interval:
                time.sleep(max(0.0, self.interval - (time.perf_counter() - t0)))
        if pending:
            self._send_feedback(session, pending)

    def _send_feedback(self, session: requests.Session, batch: list[dict[str, Any]]) -> None:
        try:
            resp = session.post(f"{self.base_url}/feedback", json={"feedback": batch}, timeout=30)
        except requests.RequestException:
            return
        if resp.status_code < 300:
            with self._lock:
                self.stats.feedback += len(batch)


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows)
