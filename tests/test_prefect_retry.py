"""ORCH's calls to Prefect's REST API retry what Prefect says may be retried.

Prefect's server answers 503 when a request failed for a reason a client may retry (SQLite busy, most
often while a test suite or a burst of flow runs writes to it); its own client retries such answers. ORCH's
approval route once turned one such 503 into "cannot reach Prefect to resume the run". Here the real session
server sits behind a loopback proxy that answers 503 to the first requests of a path and forwards the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from support import prefect_auth
from test_prefect_auth import session_prefect

from orch.config.schema import PrefectSettings
from orch.prefect_api import (
    PREFECT_RETRY,
    PrefectUnavailable,
    flow_run_state_type,
    prefect_http_client,
    resume_flow_run,
)


@dataclass
class BusyPrefect:
    """Answers 503 to the first ``busy`` requests whose path ends with ``suffix``; forwards everything."""

    url: str
    suffix: str
    busy: int
    seen: list[tuple[str, int]] = field(default_factory=list)  # (path, status answered)


@contextmanager
def busy_prefect(upstream: str, suffix: str, busy: int) -> Iterator[BusyPrefect]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    proxy = BusyPrefect(url=f"http://127.0.0.1:{server.server_address[1]}/api", suffix=suffix, busy=busy)
    forward = httpx.Client(timeout=10)
    prefix = upstream.rstrip("/").removesuffix("/api")

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?")[0]
            if path.endswith(proxy.suffix) and proxy.busy > 0:
                proxy.busy -= 1
                status, headers, content = 503, {}, b'{"exception_message":"Service Unavailable"}'
            else:
                sent = forward.request(self.command, prefix + self.path, content=body,
                                       headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                status, headers, content = sent.status_code, {"Content-Type": sent.headers.get(
                    "content-type", "application/json")}, sent.content
            proxy.seen.append((path, status))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.answer()

        def do_POST(self) -> None:  # noqa: N802
            self.answer()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        forward.close()


def behind(proxy: BusyPrefect, prefect_server: str) -> PrefectSettings:
    return session_prefect(prefect_server).model_copy(update={"api_url": proxy.url})


def running_flow_run(prefect_server: str) -> str:
    """A real flow run on the session server, running (so not paused)."""
    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        flow = prefect.post("/flows/", json={"name": "retry-probe"}).raise_for_status().json()
        run = prefect.post("/flow_runs/", json={"flow_id": flow["id"], "state": {"type": "RUNNING"}})
        return str(run.raise_for_status().json()["id"])


def test_a_resume_answered_503_is_sent_again(prefect_server: str) -> None:
    run_id = running_flow_run(prefect_server)
    with busy_prefect(prefect_server, "/resume", busy=2) as proxy:
        refused = resume_flow_run(behind(proxy, prefect_server), run_id, {"approve": False})
    assert refused == "Cannot resume a flow run that is not paused."  # the real server's answer, third time
    assert [status for _, status in proxy.seen] == [503, 503, 200]


def test_a_state_read_answered_503_is_sent_again(prefect_server: str) -> None:
    run_id = running_flow_run(prefect_server)
    with busy_prefect(prefect_server, "/flow_runs/" + run_id, busy=1) as proxy:
        assert flow_run_state_type(behind(proxy, prefect_server), run_id) == "RUNNING"
    assert [status for _, status in proxy.seen] == [503, 200]


def test_a_block_of_calls_retries_too(prefect_server: str) -> None:
    with busy_prefect(prefect_server, "/deployments/filter", busy=1) as proxy, \
            prefect_http_client(behind(proxy, prefect_server), 10.0) as client:
        assert client.post(f"{proxy.url}/deployments/filter", json={"limit": 1}).status_code == 200
    assert [status for _, status in proxy.seen] == [503, 200]


def test_a_server_that_stays_busy_is_reported_after_bounded_retries(prefect_server: str) -> None:
    run_id = running_flow_run(prefect_server)
    with busy_prefect(prefect_server, "/resume", busy=100) as proxy, pytest.raises(PrefectUnavailable) as raised:
        resume_flow_run(behind(proxy, prefect_server), run_id, {"approve": True})
    assert "answered HTTP 503" in str(raised.value)
    assert len(proxy.seen) == 1 + PREFECT_RETRY.total

