"""ORCH's calls to Prefect's REST API retry what Prefect says may be retried.

Prefect's server answers 503 when a request failed for a reason a client may retry (SQLite busy, most
often while a test suite or a burst of flow runs writes to it); its own client retries such answers. ORCH's
approval route once turned one such 503 into "cannot reach Prefect to resume the run". Here the real session
server sits behind a loopback proxy that answers 503 to the first requests of a path and forwards the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from receivers import serving
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
    """Answers ``status`` (503: busy) to the first ``busy`` requests whose path ends with ``suffix``;
    forwards everything else to the real server."""

    url: str
    suffix: str
    busy: int
    status: int = 503
    seen: list[tuple[str, int]] = field(default_factory=list)  # (path, status answered)


@contextmanager
def busy_prefect(upstream: str, suffix: str, busy: int, status: int = 503) -> Iterator[BusyPrefect]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    proxy = BusyPrefect(url=f"http://127.0.0.1:{server.server_address[1]}/api", suffix=suffix, busy=busy,
                        status=status)
    forward = httpx.Client(timeout=10)
    prefix = upstream.rstrip("/").removesuffix("/api")

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            path = self.path.split("?")[0]
            if path.endswith(proxy.suffix) and proxy.busy > 0:
                proxy.busy -= 1
                status, headers, content = proxy.status, {}, b'{"detail":"answered by the test proxy"}'
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
            """Quiet: a test's output shows its own lines, not one per request."""

    server.RequestHandlerClass = Handler
    try:
        with serving(server):
            yield proxy
    finally:
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



def running_task_run(prefect_server: str) -> str:
    """A real task run, Running, of a flow run on the session server."""
    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        flow_run = running_flow_run(prefect_server)
        run = prefect.post("/task_runs/", json={"flow_run_id": flow_run, "task_key": "orch-task", "dynamic_key": "0",
                                                "name": "noop probe", "state": {"type": "RUNNING"}})
        return str(run.raise_for_status().json()["id"])


def test_a_handed_back_task_run_not_recorded_yet_is_cancelled_once_it_is(prefect_server: str) -> None:
    """Prefect records task runs from events, asynchronously: a stopping dispatcher may find its running
    task's run not recorded yet (404). It asks again until it is, then the run is Cancelled, not left
    Running (CI saw it Running after the dispatcher had exited)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from orch.dispatch.dispatcher import HANDED_BACK_REASON, _cancel_task_runs

    run_id = running_task_run(prefect_server)
    with busy_prefect(prefect_server, f"/task_runs/{run_id}/set_state", busy=2, status=404) as proxy, \
            temporary_settings(updates={PREFECT_API_URL: proxy.url}):
        _cancel_task_runs([uuid.UUID(run_id)])
    assert [status for path, status in proxy.seen if path.endswith("/set_state")] == [404, 404, 201]
    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        state = prefect.get(f"/task_runs/{run_id}").raise_for_status().json()["state"]
    assert (state["type"], state["message"]) == ("CANCELLED", HANDED_BACK_REASON)


def test_a_task_run_never_recorded_is_left_to_the_zombie_check_after_the_wait(prefect_server: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from orch.dispatch.dispatcher import _cancel_task_runs

    with busy_prefect(prefect_server, "/set_state", busy=1000, status=404) as proxy, \
            temporary_settings(updates={PREFECT_API_URL: proxy.url}):
        _cancel_task_runs([uuid.uuid4()], wait_for_record=0.5)  # returns: the stop is not held up for good
    asked = [status for path, status in proxy.seen if path.endswith("/set_state")]
    assert len(asked) >= 2 and set(asked) == {404}
