"""schemathesis against a served ingress: cases generated from the OpenAPI document the
ingress itself serves (`/<pipeline>/openapi.json`), sent over real HTTP. The test lives
beside the served pipeline (tests/integration/test_serving.py), whose fixture is visible
only there; the run and its checks are here."""

from __future__ import annotations

import collections
import json
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

_TRACE_MARKS = ("Traceback (most recent call last)", 'File "/')


def check_answer(method: str, path: str, resp: requests.Response) -> None:
    """No 5xx, no traceback, and every refusal in the platform's `{"error": ...}` shape."""
    where = f"{method} {path} -> {resp.status_code}: {resp.text[:300]}"
    assert resp.status_code < 500, where
    assert not any(m in resp.text for m in _TRACE_MARKS), where
    if resp.status_code >= 400:
        body = json.loads(resp.text)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], where


def _run_cases(op: Any, base_url: str, session: requests.Session, counts: collections.Counter[int],
               max_examples: int) -> None:
    """One operation's cases (a function of its own: hypothesis refuses @given on a function
    with defaults, which a closure over the loop's variables would need)."""

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def one(case: Any) -> None:
        resp = case.call(base_url=base_url, session=session, timeout=30)
        counts[resp.status_code] += 1
        check_answer(case.method, case.formatted_path, resp)

    one()


def fuzz(base_url: str, *, max_examples: int = 50) -> dict[str, collections.Counter[int]]:
    """Every operation of the served document, `max_examples` generated cases each (positive
    and negative: schemathesis' default modes), sent to `base_url`; returns the status codes
    seen per operation. Fails on the first case that breaks `check_answer`."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=30)
    seen: dict[str, collections.Counter[int]] = {}
    session = requests.Session()
    for result in schema.get_all_operations():
        op = result.ok()
        label = f"{op.method.upper()} {op.path}"
        counts: collections.Counter[int] = collections.Counter()
        seen[label] = counts

        _run_cases(op, base_url, session, counts, max_examples)
    return seen
