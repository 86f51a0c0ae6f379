"""The API's boundary (issue 14): bounded request heads and JSON, text PostgreSQL cannot store, trusted
proxies only, security headers, capped streams, silence ends beside dispatches, strict integers.

Whatever depends on the HTTP server runs against a real uvicorn built with the product's own options
(:func:`orch.api.server.uvicorn_options`) on a real socket; the rest drives the real app in-process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from api_fixtures import PASSWORD, WEBHOOK_SECRET, Api, serve_app
from support import wait_until

from orch.api.protocol import bounded_protocol
from orch.config.schema import Settings
from orch.monitoring import silences
from orch.security.webhook_signature import sign

MB = 1024 * 1024


def _exchange(base: str, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes: the whole answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# ---- request heads -------------------------------------------------------------------------------
IMPLEMENTATIONS = ["httptools", "h11"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_50_mb_header_is_cut_off_while_healthz_keeps_answering(api_factory: Callable[..., Api],
                                                                  implementation: str) -> None:
    """Before: the head was read whole (50 MB in memory), then answered 200. Now the connection is closed
    after about ``api.max_header_bytes``, so the sender cannot get 50 MB through, and /healthz answers
    throughout on other connections."""
    api = api_factory()
    with serve_app(api.settings, http=bounded_protocol(implementation)) as (base, _):
        host, port = base.removeprefix("http://").split(":")
        outcome: dict[str, Any] = {}

        def flood() -> None:
            with socket.create_connection((host, int(port)), timeout=60) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
                outcome["started"] = True
                sent, chunk = 0, b"a" * 65536
                try:
                    while sent < 50 * MB:
                        sock.sendall(chunk)
                        sent += len(chunk)
                    sock.sendall(b"\r\n\r\n")
                    outcome["sent"] = sent
                    outcome["answer"] = sock.recv(65536)
                except OSError:  # reset or broken pipe: the server closed the connection
                    outcome["cut_after"] = sent

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        wait_until(lambda: outcome.get("started"), 30, "the flood to start")
        with httpx.Client(base_url=base, timeout=30) as client:
            answers = [client.get("/healthz").status_code for _ in range(20)]
        thread.join(120)
    assert answers == [200] * 20
    assert "sent" not in outcome, f"the server read a 50 MB header and answered {outcome.get('answer', b'')[:40]!r}"
    assert outcome["cut_after"] < 50 * MB


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_a_head_over_the_limits_gets_431(api_factory: Callable[..., Api], implementation: str) -> None:
    def small(settings: Settings) -> None:
        settings.api.max_header_bytes = 2048

    api = api_factory(tweak=small)
    with serve_app(api.settings, http=bounded_protocol(implementation)) as (base, _):
        too_large = _exchange(base, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 4096
                              + b"\r\n\r\n")
        many = b"".join(b"X-%d: 1\r\n" % i for i in range(101))
        too_many = _exchange(base, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
        fine = httpx.get(f"{base}/healthz", headers={f"X-{i}": "1" for i in range(90)})
    assert too_large.startswith(b"HTTP/1.1 431 "), too_large[:200]
    assert b"api.max_header_bytes" in too_large
    assert too_many.startswith(b"HTTP/1.1 431 "), too_many[:200]
    assert b"\r\nx-content-type-options: nosniff\r\n" in too_many
    assert b"api.max_headers" in too_many
    assert fine.status_code == 200


# ---- JSON depth ----------------------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deep_json_is_refused_before_any_parser(api: Api) -> None:
    """Before: the webhook's json.loads raised RecursionError (500, connection reset)."""
    deep = b'{"event": "ping", "x": ' + _nested(100_000) + b"}"
    webhook = api.client.post("/webhook", content=deep, headers={"X-Signature": sign(WEBHOOK_SECRET, deep),
                                                                  "Content-Type": "application/json"})
    dispatch = api.client.post("/dispatch", content=b'{"core_id": "c", "metadata": {"x": ' + _nested(100_000)
                               + b"}}", headers={**api.headers("admin"), "Content-Type": "application/json"})
    unclosed = api.client.post("/dispatch", content=b"[" * 100_000,
                               headers={**api.headers("admin"), "Content-Type": "application/json"})
    for response in (webhook, dispatch, unclosed):
        assert response.status_code == 422, response.text
        assert response.json()["errors"] == ["body: JSON nests deeper than 64 levels (api.max_json_depth)"]
    # 64 levels in all (the body, metadata, 62 lists) and brackets inside strings are fine
    body = {"core_id": "c", "action": "noop", "metadata": {"x": json.loads(_nested(62)), "s": "[" * 500}}
    assert api.client.post("/dispatch", json=body, headers=api.headers("admin")).status_code == 202


# ---- text PostgreSQL cannot store ----------------------------------------------------------------
def _webhook(task_id: str) -> dict[str, Any]:
    body = json.dumps({"event": "task.started", "task_id": task_id}).encode()
    return {"content": body, "headers": {"X-Signature": sign(WEBHOOK_SECRET, body)}}


# (role, method, url, request keyword arguments): every place a NUL reached a query on PostgreSQL
NUL_INPUTS: list[tuple[str | None, str, str, dict[str, Any]]] = [
    (None, "POST", "/auth/token", {"data": {"username": "al\x00ice", "password": PASSWORD}}),
    (None, "POST", "/auth/token", {"data": {"username": "alice", "password": "pw\x00"}}),
    ("admin", "GET", "/tasks/ab%00cd", {}),
    ("admin", "POST", "/tasks/ab%00cd/cancel", {}),
    ("admin", "POST", "/tasks/ab%00cd/retry", {}),
    ("admin", "GET", "/jobs/ab%00cd/events", {}),
    ("system", "PUT", "/jobs/ab%00cd/status", {"json": {"status": "running"}}),
    ("admin", "GET", "/tasks", {"params": {"core_id": "a\x00b"}}),
    ("admin", "GET", "/audit", {"params": {"username": "a\x00"}}),
    ("admin", "GET", "/audit", {"params": {"action": "x\x00"}}),
    ("admin", "GET", "/heals", {"params": {"target": "web\x00"}}),
    ("admin", "POST", "/dispatch", {"json": {"core_id": "c", "action": "noop", "idempotency_key": "k\x00"}}),
    ("admin", "POST", "/dispatch", {"json": {"core_id": "c", "action": "noop", "metadata": {"source": "s\x00"}}}),
    ("admin", "POST", "/dispatch/batch", {"json": {"tasks": [{"core_id": "c", "idempotency_key": "\x00"}]}}),
    ("admin", "POST", "/silences", {"json": {"target": "web\x00", "duration_seconds": 60}}),
    (None, "POST", "/webhook", _webhook("t\x00")),
]


def test_nul_characters_are_a_4xx_on_both_databases(api_factory: Callable[..., Api], database_url: str) -> None:
    """Before: 500 on PostgreSQL for most of these (the driver refuses NUL in text)."""
    api = api_factory(database_url)
    answers = {}
    for role, method, url, arguments in NUL_INPUTS:
        kwargs = dict(arguments)
        headers = {**api.headers(role), **kwargs.pop("headers", {})}
        response = api.client.request(method, url, headers=headers, **kwargs)
        answers[f"{method} {url} {sorted(kwargs)}"] = (response.status_code, response.text[:200])
    wrong = {where: answer for where, answer in answers.items() if not 400 <= answer[0] < 500}
    assert not wrong, wrong
    named = api.client.post("/silences", json={"target": "web\x00", "duration_seconds": 60},
                            headers=api.headers("admin"))
    assert named.json()["errors"] == ["body.target: contains a NUL character, which cannot be stored"]
    login = api.client.post("/auth/token", data={"username": "al\x00ice", "password": PASSWORD})
    assert login.status_code == 422 and login.json()["errors"][0].startswith("form.username: contains a NUL")
    surrogate = api.client.post("/dispatch", content=b'{"core_id": "c", "metadata": {"source": "\\ud800"}}',
                                headers={**api.headers("admin"), "Content-Type": "application/json"})
    assert surrogate.json()["errors"] == ["body.metadata.source: contains a lone UTF-16 surrogate, which is not text"]
    pair = {"core_id": "c", "action": "noop", "metadata": {"source": "\U0001f600"}}  # \ud83d\ude00 is text
    accepted = api.client.post("/dispatch", content=json.dumps(pair).encode(),
                               headers={**api.headers("admin"), "Content-Type": "application/json"})
    assert accepted.status_code == 202, accepted.text


# NaN, Infinity and -Infinity: Python's JSON parser takes them (and reads 1e309 as Infinity), JSON (RFC 8259)
# has no such numbers
NON_FINITE = "must be a finite number (JSON has no NaN or Infinity, and a double holds at most 1.8e308)"
NON_FINITE_INPUTS: list[tuple[str | None, str, dict[str, Any]]] = [
    ("admin", "/dispatch", {"core_id": "c", "action": "noop", "metadata": {"x": "<N>"}}),
    ("admin", "/dispatch", {"core_id": "c", "action": "run-deployment",
                            "params": {"name": "ops-report/daily", "parameters": {"ratio": "<N>"}}}),
    ("admin", "/dispatch/batch", {"tasks": [{"core_id": "c", "action": "noop", "metadata": {"n": ["<N>"]}}]}),
    ("system", "/jobs/abc/status", {"status": "running", "result": {"x": "<N>"}}),
]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e309", "-1E+400", "1" + "0" * 400 + ".5"])
def test_a_number_json_has_not_is_a_422_on_both_databases(api_factory: Callable[..., Api], database_url: str,
                                                          token: str) -> None:
    """Before: a dispatch whose metadata or params held ``Infinity`` (or ``1e309``) was queued on both databases
    with null in its place. Refused before any route, naming the place; the same word inside a string is
    text."""
    api = api_factory(database_url)
    for role, url, body in NON_FINITE_INPUTS:
        content = json.dumps(body).replace('"<N>"', token).encode()
        response = api.client.request("PUT" if url.startswith("/jobs") else "POST", url, content=content,
                                      headers={**api.headers(role), "Content-Type": "application/json"})
        assert response.status_code == 422, (url, response.status_code, response.text[:300])
        [problem] = response.json()["errors"]
        assert problem.startswith("body.") and problem.endswith(f": {NON_FINITE}"), problem
    assert api.client.get("/tasks", headers=api.headers("admin")).json()["tasks"] == []
    named = api.client.post("/dispatch", content=json.dumps(NON_FINITE_INPUTS[0][2]).replace('"<N>"', token).encode(),
                            headers={**api.headers("admin"), "Content-Type": "application/json"})
    assert named.json()["errors"] == [f"body.metadata.x: {NON_FINITE}"]
    text = {"core_id": "c", "action": "noop", "metadata": {"source": f"{token[:40]} NaN Infinity 1e309"}}
    assert api.client.post("/dispatch", json=text, headers=api.headers("admin")).status_code == 202


# ---- trusted proxies -----------------------------------------------------------------------------
def _audited_addresses(base: str, client: httpx.Client) -> list[str]:
    token = client.post(f"{base}/auth/token", data={"username": "alice", "password": PASSWORD}).json()
    entries = client.get(f"{base}/audit", params={"action": "authenticate", "username": "oscar", "success": False},
                         headers={"Authorization": f"Bearer {token['access_token']}"}).json()["entries"]
    return [entry["ip_address"] for entry in entries]


def test_x_forwarded_for_from_an_untrusted_client_is_ignored(api_factory: Callable[..., Api]) -> None:
    """Before: uvicorn trusted X-Forwarded-For from 127.0.0.1, i.e. from any local client: each attempt
    from a new made-up address escaped the per-address login limit and forged the audit's address."""
    from limits import RateLimitItemPerHour

    api = api_factory()
    with serve_app(api.settings) as (base, app), httpx.Client(timeout=30) as client:
        app.state.rate_limiter.per_minute = RateLimitItemPerHour(3)
        wait_until(lambda: time.time() % 3600 < 3540, 90, "a minute clear of the hour's end", interval=1)
        statuses = [client.post(f"{base}/auth/token", data={"username": "oscar", "password": "wrong"},
                                headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(5)]
        app.state.rate_limiter.per_minute = RateLimitItemPerHour(1000)
        addresses = _audited_addresses(base, client)
    assert statuses == [401, 401, 401, 429, 429]
    assert addresses and set(addresses) == {"127.0.0.1"}


def test_x_forwarded_for_from_a_configured_proxy_is_honoured(api_factory: Callable[..., Api]) -> None:
    api = api_factory(FORWARDED_ALLOW_IPS="10.9.9.9, 127.0.0.1")
    assert api.settings.api.forwarded_allow_ips == ["10.9.9.9", "127.0.0.1"]
    with serve_app(api.settings) as (base, _), httpx.Client(timeout=30) as client:
        client.post(f"{base}/auth/token", data={"username": "oscar", "password": "wrong"},
                    headers={"X-Forwarded-For": "198.51.100.7, 127.0.0.1"})
        addresses = _audited_addresses(base, client)
    assert addresses == ["198.51.100.7"]
    # in-process the same rule applies: the test client ("testclient") is no configured proxy
    api.client.post("/auth/token", data={"username": "oscar", "password": "wrong"},
                    headers={"X-Forwarded-For": "198.51.100.8"})
    entries = api.client.get("/audit", params={"action": "authenticate", "username": "oscar"},
                             headers=api.headers("admin")).json()["entries"]
    assert "198.51.100.8" not in [entry["ip_address"] for entry in entries]


# ---- security headers ----------------------------------------------------------------------------
def test_security_headers_on_every_response_and_a_csp_that_keeps_docs_working(api: Api) -> None:
    client = api.client
    responses = [client.get("/healthz"), client.get("/no-such-route"), client.get("/tasks"),
                 client.post("/dispatch", content=_nested(100), headers={"Content-Type": "application/json"}),
                 client.get("/healthz", headers={"Host": "forged.example"}), client.get("/openapi.json")]
    assert [r.status_code for r in responses] == [200, 404, 401, 422, 400, 200]
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
        assert "content-security-policy" not in response.headers  # JSON needs none
    for encoding in ("identity", "gzip"):
        docs = client.get("/docs", headers={"Accept-Encoding": encoding})
        assert docs.status_code == 200 and docs.headers["x-frame-options"] == "DENY"
        policy = docs.headers["content-security-policy"]
        scripts = re.findall(r"<script>(.*?)</script>", docs.text, re.DOTALL)
        assert scripts, docs.text
        for script in scripts:  # the inline script that starts Swagger UI may run, by its hash
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy and "http" not in policy  # every asset is served locally


# ---- streams -------------------------------------------------------------------------------------
@contextmanager
def _stream(client: httpx.Client, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
    with client.stream("GET", url, **kwargs) as response:
        chunks = response.iter_bytes()  # kept while the stream is held: dropping it closes the connection
        if response.status_code == 200:
            next(chunks)  # the first message: the stream is open and counted
        else:
            response.read()
        yield response


def test_anonymous_health_streams_are_capped(api_factory: Callable[..., Api]) -> None:
    def caps(settings: Settings) -> None:
        settings.api.max_anonymous_streams = 2
        settings.api.max_streams_per_user = 1

    api = api_factory(tweak=caps)
    with serve_app(api.settings) as (base, _), httpx.Client(base_url=base, timeout=30) as client:
        with _stream(client, "/events/health") as first, _stream(client, "/events/health") as second:
            assert first.status_code == second.status_code == 200
            with _stream(client, "/events/health") as third:
                assert third.status_code == 503 and int(third.headers["retry-after"]) > 0
                assert "api.max_anonymous_streams" in third.json()["detail"]
        # both given back when their clients left, whether or not they had sent a heartbeat
        def reopened() -> bool:
            with _stream(client, "/events/health") as again:
                return again.status_code == 200

        wait_until(reopened, 30, "a slot to be given back")
        viewer, operator = api.headers("viewer"), api.headers("operator")
        with _stream(client, "/sse/events", headers=viewer) as mine:
            assert mine.status_code == 200
            with _stream(client, "/sse/events", headers=viewer) as another:
                assert another.status_code == 429 and "api.max_streams_per_user" in another.json()["detail"]
            with _stream(client, "/sse/events", headers=operator) as theirs:
                assert theirs.status_code == 200


# ---- silence ends take the write turn ------------------------------------------------------------
def test_silence_ends_beside_dispatches_all_succeed_on_sqlite(api_factory: Callable[..., Api]) -> None:
    """Before: 37 of 60 ends answered 503 "database is locked" beside 60 concurrent dispatches."""
    api = api_factory()
    assert api.settings.database.url.startswith("sqlite")
    ids = [silences.create(api.settings, kind="silence", target=f"web{i}", duration=timedelta(hours=1),
                           actor="test")["id"] for i in range(60)]
    admin = api.headers("admin")
    with serve_app(api.settings) as (base, _), httpx.Client(base_url=base, timeout=60,
                                                         limits=httpx.Limits(max_connections=120)) as client:
        def end(silence_id: int) -> int:
            return client.delete(f"/silences/{silence_id}", headers=admin).status_code

        def dispatch(i: int) -> int:
            return client.post("/dispatch", json={"core_id": f"c{i % 5}", "action": "noop"},
                               headers=admin).status_code

        with ThreadPoolExecutor(max_workers=120) as pool:
            ends = [pool.submit(end, silence_id) for silence_id in ids]
            dispatches = [pool.submit(dispatch, i) for i in range(60)]
            end_statuses = [future.result() for future in ends]
            dispatch_statuses = [future.result() for future in dispatches]
    assert end_statuses == [200] * 60
    assert dispatch_statuses == [202] * 60
    assert silences.list_silences(api.settings) == []


# ---- strict integers and booleans, and the documented 422 ----------------------------------------
def test_true_is_no_integer_and_one_is_no_boolean(api: Api) -> None:
    admin = api.headers("admin")
    refused = [api.client.post("/dispatch", json={"core_id": "c", "action": "noop", **extra}, headers=admin)
               for extra in ({"timeout": True}, {"max_retries": False}, {"stay": 1}, {"timeout": "30"})]
    assert [r.status_code for r in refused] == [422] * 4, [r.text for r in refused]
    silence = api.client.post("/silences", json={"target": "web", "duration_seconds": True}, headers=admin)
    assert silence.status_code == 422
    accepted = api.client.post("/dispatch", json={"core_id": "c", "action": "noop", "timeout": 30.0,
                                                  "max_retries": 2, "stay": True}, headers=admin)
    assert accepted.status_code == 202, accepted.text


def test_the_schema_documents_the_real_422_body(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("422")
            if answer is not None:
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, \
                    f"{method} {path}"
    body = schema["components"]["schemas"]["ErrorBody"]
    assert body["properties"]["detail"] == {"type": "string", "title": "Detail"}
    real = api.client.get("/health", params={"detailed": "maybe"}).json()
    assert set(real) == {"detail", "errors"} and isinstance(real["errors"], list)


def test_the_html_policy_hashes_scripts_of_a_compressed_page() -> None:
    """/docs is under GZip's minimum size today; a larger page reaches the security headers compressed."""
    from fastapi.testclient import TestClient
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.responses import HTMLResponse

    from orch.api.middleware import SecurityHeadersMiddleware

    script = "console.log('x');" * 200
    page = HTMLResponse(f"<html><body><script>{script}</script></body></html>")
    client = TestClient(SecurityHeadersMiddleware(GZipMiddleware(page, minimum_size=100)))  # no lifespan
    response = client.get("/", headers={"Accept-Encoding": "gzip"})
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert response.headers["content-encoding"] == "gzip" and response.text.count("console.log") == 200
    assert f"'sha256-{digest}'" in response.headers["content-security-policy"]
