"""The ``dispatch`` flow on the real Prefect server: actions run as Prefect tasks, and every outcome
(completed, failed after retries, timed out, cancelled) lands in the queue of record exactly once."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from orch.config.runtime import get_settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.migrate import upgrade


@pytest.fixture
def queue(prefect_server: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> TaskQueue:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ORCH_DISPATCH__SHELL_ALLOWLIST", "[/bin/false, /bin/echo]")
    monkeypatch.setenv("ORCH_DISPATCH__CORE_CONCURRENCY", "10")
    settings = get_settings()
    upgrade(settings.database)
    return TaskQueue(settings)


def put(queue: TaskQueue, **body: Any) -> str:
    body.setdefault("core_id", "WORK_AI_01")
    task, _ = queue.enqueue(validate(body, queue.settings), "tester")
    return str(task["task_id"])


def events(queue: TaskQueue, task_id: str) -> list[str]:
    return [e["event_type"] for e in queue.events(task_id)]


def test_drain_runs_every_outcome(queue: TaskQueue, prefect_server: str) -> None:
    from flows.dispatch import dispatch

    ok = [put(queue, action="noop") for _ in range(3)]
    echo = put(queue, action="shell", params={"argv": ["/bin/echo", "hello"]})
    failing = put(queue, action="shell", params={"argv": ["/bin/false"]}, max_retries=1)
    slow = put(queue, action="sleep", params={"seconds": 5}, timeout=1, max_retries=0)

    summary = dispatch(run_for_seconds=0, concurrency=8)
    assert summary["claimed"] == 6 and summary["finished"] == 6

    for task_id in ok:
        assert queue.get(task_id)["status"] == "completed"
        assert events(queue, task_id) == ["task.created", "task.started", "task.completed"]
    assert queue.get(echo)["result"]["stdout"] == "hello\n"
    failed = queue.get(failing)
    assert (failed["status"], failed["attempts"], failed["error"]) == ("failed", 2, "exit code 1")
    assert events(queue, failing) == ["task.created", "task.started", "task.retrying", "task.failed"]
    timed_out = queue.get(slow)
    assert timed_out["status"] == "timed_out", timed_out
    assert timed_out["error"] == "timed out after 1 s"

    runs = httpx.post(f"{prefect_server}/task_runs/filter", json={
        "task_runs": {"tags": {"all_": [f"orch-task:{failing}"]}}}, timeout=10).json()
    assert [r["name"] for r in runs] == [f"shell {failing}"]
    assert runs[0]["state"]["type"] == "FAILED" and runs[0]["run_count"] == 2


def test_cancelled_while_running_is_not_completed(queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.dispatch import dispatch

    monkeypatch.setenv("ORCH_DISPATCH__LEASE_SECONDS", "0.3")
    from orch.config.runtime import reset_settings_cache

    reset_settings_cache()
    task_id = put(queue, action="sleep", params={"seconds": 1.5}, max_retries=2)

    def cancel_soon() -> None:
        time.sleep(0.5)
        queue.cancel(task_id, "ops")

    threading.Thread(target=cancel_soon).start()
    summary = dispatch(run_for_seconds=0, concurrency=2)
    assert summary["lost"] == 1
    assert queue.get(task_id)["status"] == "cancelled"
    assert events(queue, task_id) == ["task.created", "task.started", "task.cancelled"]
