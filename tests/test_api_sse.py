"""SSE over real HTTP: a dispatched task's events stream to a client as they happen, resume with
Last-Event-ID, are filtered by role, and the heartbeat stream has the right headers."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
from api_fixtures import PASSWORD, ROLE_USERS, add_users, make_settings, serve


def _token(url: str, role: str) -> str:
    response = httpx.post(f"{url}/auth/token", data={"username": ROLE_USERS[role], "password": PASSWORD})
    return str(response.json()["access_token"])


class Reader(threading.Thread):
    """Reads an SSE stream in the background and keeps every event it saw.

    ``connected`` is set once the response has begun: the server subscribes a stream before it answers,
    so from then on the reader gets every later event (what a test waits for before causing any)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.content_type = ""
        self.stop = threading.Event()
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            self._read()
        except httpx.TransportError:
            if not self.stop.is_set():
                raise  # the stream broke while the test still read it
            # told to stop, and the server went away before another line came: the end the test asked for
        finally:
            self.connected.set()  # also when the request failed: the test then sees no status, not a hang

    def _read(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(30, read=30)) as response:
            self.status, self.content_type = response.status_code, response.headers.get("content-type", "")
            self.connected.set()
            current: dict[str, Any] = {}
            for line in response.iter_lines():
                if self.stop.is_set():
                    return
                if not line:
                    if "data" in current:
                        self.events.append(current)
                    current = {}
                elif line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(":")
                    current[key] = json.loads(value) if key == "data" else value.strip()

    def wait_for(self, predicate: Any, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.events):
                return self.events
            time.sleep(0.05)
        raise AssertionError(f"timed out; events so far: {self.events}")


def test_task_events_stream_end_to_end_and_resume(isolated_env: Any) -> None:
    settings = make_settings(isolated_env, ORCH_API__SSE_POLL_SECONDS="0.05", ORCH_API__SSE_HEARTBEAT_SECONDS="1")
    add_users(settings)
    with serve(settings) as url:
        viewer = {"Authorization": f"Bearer {_token(url, 'viewer')}"}
        core = {"Authorization": f"Bearer {_token(url, 'system')}"}
        operator = {"Authorization": f"Bearer {_token(url, 'operator')}"}
        everyone = Reader(f"{url}/sse/events", viewer)
        core_only = Reader(f"{url}/sse/events", core)
        everyone.start(), core_only.start()
        assert everyone.connected.wait(60) and core_only.connected.wait(60)
        assert everyone.status == 200 and everyone.content_type.startswith("text/event-stream")
        assert core_only.status == 200

        mine = httpx.post(f"{url}/dispatch", json={"core_id": "core-a", "action": "external"}, headers=operator).json()
        other = httpx.post(f"{url}/dispatch", json={"core_id": "core-z", "action": "noop"}, headers=operator).json()
        httpx.post(f"{url}/cores/core-a/claim", headers=core)
        result = {"password": "hunter2-x"}  # pragma: allowlist secret
        httpx.put(f"{url}/jobs/{mine['task_id']}/status", json={"status": "completed", "result": result},
                  headers=core)

        seen = everyone.wait_for(lambda ev: any(e["event"] == "task.completed" for e in ev))
        kinds = [(e["data"]["task_id"], e["event"]) for e in seen]
        assert kinds == [(mine["task_id"], "task.created"), (other["task_id"], "task.created"),
                         (mine["task_id"], "task.started"), (mine["task_id"], "task.completed")]
        assert "hunter2-x" not in json.dumps(seen)  # secrets in task results are masked on the stream
        core_seen = core_only.wait_for(lambda ev: len(ev) >= 3)
        assert {e["data"]["task_id"] for e in core_seen} == {mine["task_id"]}  # not core-z's task
        everyone.stop.set(), core_only.stop.set()

        # Resume after the first event: exactly the three that followed it, from the database.
        resumed = Reader(f"{url}/sse/events", {**viewer, "Last-Event-ID": seen[0]["id"]})
        resumed.start()
        replay = resumed.wait_for(lambda ev: len(ev) >= 3)
        assert [e["id"] for e in replay[:3]] == [e["id"] for e in seen[1:]]
        resumed.stop.set()

        anonymous = httpx.get(f"{url}/sse/events")
        assert anonymous.status_code == 401


def test_health_event_stream_headers(isolated_env: Any) -> None:
    settings = make_settings(isolated_env, ORCH_API__SSE_HEARTBEAT_SECONDS="0.2")
    with serve(settings) as url, httpx.stream("GET", f"{url}/events/health", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        beats = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                beats.append(json.loads(line[5:]))
            if len(beats) == 3:
                break
        assert [b["sequence"] for b in beats] == [1, 2, 3] and beats[0]["status"] == "ok"


def test_the_stream_and_job_events_show_the_same_masked_data(isolated_env: Any) -> None:
    """One masking rule: each event's data on the stream equals its data from ``/jobs/{id}/events``,
    and neither holds the secrets of the task's metadata or error (also inside quotes or nested)."""
    settings = make_settings(isolated_env, ORCH_API__SSE_POLL_SECONDS="0.05")
    add_users(settings)
    secrets = ("meta-pw-stream-0001", "nested-pw-stream-0002", "quoted pw stream 0003")  # pragma: allowlist secret
    with serve(settings) as url:
        viewer = {"Authorization": f"Bearer {_token(url, 'viewer')}"}
        core = {"Authorization": f"Bearer {_token(url, 'system')}"}
        operator = {"Authorization": f"Bearer {_token(url, 'operator')}"}
        reader = Reader(f"{url}/sse/events", viewer)
        reader.start()
        assert reader.connected.wait(60) and reader.status == 200

        task_id = httpx.post(f"{url}/dispatch", headers=operator, json={
            "core_id": "core-a", "action": "external",
            "metadata": {"password": secrets[0], "credentials": {"user": "u", "password": secrets[1]}}}
        ).json()["task_id"]
        httpx.post(f"{url}/cores/core-a/claim", headers=core)
        httpx.put(f"{url}/jobs/{task_id}/status", headers=core,
                  json={"status": "failed", "error": f'login: password: "{secrets[2]}" refused'})

        streamed = reader.wait_for(lambda ev: any(e["event"] == "task.failed" for e in ev))
        reader.stop.set()
        listed = httpx.get(f"{url}/jobs/{task_id}/events", headers=viewer).json()["events"]
        assert [e["data"]["event_id"] for e in streamed] == [e["event_id"] for e in listed]
        assert [e["data"]["data"] for e in streamed] == [e["data"] for e in listed]
        assert not [s for s in secrets if s in json.dumps(streamed) + json.dumps(listed)]
        created, failed = listed[0]["data"], listed[-1]["data"]
        assert (created["metadata"]["password"], created["metadata"]["credentials"]) == ("***", "***")
        assert failed["error"] == 'login: password: "***" refused'
