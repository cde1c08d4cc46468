"""The ingress's request limits (serve.limits) over real HTTP: a FastAPI app built the way the
ingress builds its own (the middleware, `answers`, `read_json`) served by uvicorn on a free
port, and raw sockets for what a well-behaved client library will not do (send headers and
stop, trickle a body, keep sending past the limit). The real ingress on Ray Serve is covered
by tests/integration/test_serving.py."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

from mlplatform.runtime.local import free_port
from mlplatform.spec import DeploySpec
from serve.limits import Limits, LimitsBox, RequestLimits, answers, count_rows, read_json
from serve.responses import json_response

LIMITS = Limits(max_body_bytes=3000, max_rows=5, max_inflight_per_client=2, body_timeout_s=1.0)


class _Server:
    """The app's state the tests look at: bodies the route parsed, requests held open."""

    def __init__(self) -> None:
        self.parsed: list[Any] = []
        self.entered = threading.Semaphore(0)
        self.release: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


def _app(state: _Server) -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestLimits, box=LimitsBox(LIMITS))

    class Routes:  # the ingress's routes are methods: `answers` takes `self`
        @answers
        async def predict(self, request: Request) -> Response:
            body = await read_json(request, "predict", LIMITS.max_rows)
            state.parsed.append(body)
            return json_response({"ok": True})

        @answers
        async def hold(self, request: Request) -> Response:
            state.release = state.release or asyncio.Event()
            state.loop = asyncio.get_running_loop()
            state.entered.release()
            await state.release.wait()
            return json_response({"ok": True})

    routes = Routes()
    app.add_api_route("/predict", routes.predict, methods=["POST"])
    app.add_api_route("/hold", routes.hold, methods=["GET"])
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, _Server, uvicorn.Server]]:
    state = _Server()
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(_app(state), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", state, srv
    srv.should_exit = True
    thread.join(timeout=10)


def _raw(url: str, head: bytes, chunks: list[bytes] = (), pause_s: float = 0.0) -> tuple[int, dict, bytes]:
    """Send the request line and headers, then each chunk; read the answer whenever it comes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        try:
            for chunk in chunks:
                s.sendall(chunk)
                if pause_s:
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body was all sent
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            more = s.recv(65536)
            if not more:
                break
            data += more
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server) -> None:  # noqa: ANN001
    url, state, _ = server
    before = len(state.parsed)
    # Headers only: the server must answer without waiting for a single byte of the body.
    status, _, body = _raw(url, b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                b"content-length: 5000\r\n\r\n")
    assert status == 413
    assert json.loads(body)["error"] == ("body of 5000 bytes is over the limit of 3000 bytes "
                                         "(deploy.max_body_kb)")
    assert len(state.parsed) == before


def test_a_chunked_body_is_cut_off_at_the_limit(server) -> None:  # noqa: ANN001
    url, state, _ = server
    before = len(state.parsed)
    chunk = b" " * 400
    # 20 chunks of 400 bytes with no length declared: refused once 3000 bytes have arrived.
    frames = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 20 + [b"0\r\n\r\n"]
    status, _, body = _raw(url, b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                b"transfer-encoding: chunked\r\n\r\n", frames)
    assert status == 413 and "over the limit of 3000 bytes" in json.loads(body)["error"]
    assert len(state.parsed) == before


def test_a_slow_body_gets_408(server) -> None:  # noqa: ANN001
    url, state, _ = server
    before = len(state.parsed)
    # Declares 100 bytes, sends 10, then nothing: past body_timeout_s (1 s) the server answers.
    status, _, body = _raw(url, b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                                b"content-length: 100\r\n\r\n", [b'{"rows": ['])
    assert status == 408
    assert json.loads(body)["error"] == "the body did not arrive within 1 s (deploy.body_timeout_s)"
    assert len(state.parsed) == before


def test_too_many_rows_names_the_limit_and_the_count(server) -> None:  # noqa: ANN001
    url, _, _ = server
    resp = requests.post(url + "/predict", json={"rows": [{"a": 1}] * 6}, timeout=10)
    assert resp.status_code == 413
    assert resp.json() == {"error": "too many rows: 6 (the limit is 5, deploy.max_rows)"}
    assert requests.post(url + "/predict", json={"rows": [{"a": 1}] * 5}, timeout=10).status_code == 200


def test_deeply_nested_json_is_a_400_not_a_crash(server) -> None:  # noqa: ANN001
    url, _, _ = server
    resp = requests.post(url + "/predict", data=b"[" * 900, timeout=10,
                         headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("malformed JSON")
    resp = requests.post(url + "/predict", data=b"[" * 1400 + b"]" * 1400, timeout=10)
    assert resp.status_code == 400, resp.text  # parses only past Python's recursion limit


def test_one_client_over_its_concurrency_gets_429_others_do_not(server) -> None:  # noqa: ANN001
    url, state, _ = server
    held: list[requests.Response] = []
    threads = [threading.Thread(target=lambda: held.append(requests.get(url + "/hold", timeout=30)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(2):
        assert state.entered.acquire(timeout=20)  # both are in flight now
    try:
        third = requests.get(url + "/hold", timeout=10)
        assert third.status_code == 429
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"] == ("too many requests in flight from this client: 3 with a limit of 2 "
                                         "per replica (deploy.max_inflight_per_client); retry after 1 s")
        # An API key is a client of its own (and never appears in an answer).
        other = threading.Thread(target=lambda: held.append(
            requests.get(url + "/hold", headers={"x-api-key": "secret-k"}, timeout=30)))
        other.start()
        assert state.entered.acquire(timeout=20)
    finally:
        assert state.release is not None and state.loop is not None
        state.loop.call_soon_threadsafe(state.release.set)
    for t in [*threads, other]:
        t.join(timeout=20)
    assert [r.status_code for r in held] == [200, 200, 200]
    # All three finished: the count went back to zero.
    assert requests.get(url + "/hold", timeout=10).status_code == 200


def test_count_rows_per_format() -> None:
    assert count_rows({"rows": [{}] * 3}, "predict") == 3
    assert count_rows({"columns": {"a": [1] * 4, "b": [1]}}, "predict") == 4
    assert count_rows({"entities": ["x"] * 2}, "predict") == 2
    assert count_rows({"inputs": [{"name": "a", "shape": [7, 1]}, {"shape": "x"}]}, "v2") == 7
    assert count_rows({"dataframe_split": {"columns": ["a"], "data": [[1]] * 8}}, "mlflow") == 8
    assert count_rows({"instances": [{}] * 9}, "mlflow") == 9
    assert count_rows({"inputs": {"a": [1] * 6}}, "mlflow") == 6
    assert count_rows({"feedback": [{}] * 2}, "feedback") == 2
    assert count_rows({"request_id": "x", "label": 1}, "feedback") == 1
    assert count_rows([1, 2], "predict") == 0 and count_rows({"rows": "x"}, "predict") == 0


def test_the_limits_come_from_the_deploy_section() -> None:
    deploy = DeploySpec(max_body_kb=8, max_rows=10, max_inflight_per_client=3, body_timeout_s=2.5)
    assert Limits.of(deploy) == Limits(max_body_bytes=8192, max_rows=10, max_inflight_per_client=3,
                                       body_timeout_s=2.5)
    assert Limits.of(DeploySpec()) == Limits(max_body_bytes=1024 * 1024, max_rows=1000,
                                             max_inflight_per_client=64, body_timeout_s=30)
