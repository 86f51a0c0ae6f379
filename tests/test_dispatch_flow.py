"""The ``dispatch`` flow on the real Prefect server: actions run as Prefect tasks, and every outcome
(completed, failed after retries, timed out, cancelled) lands in the queue of record exactly once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import prefect_auth, settled_run

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

    def failing_run() -> dict[str, Any]:
        runs = httpx.post(f"{prefect_server}/task_runs/filter", json={
            "task_runs": {"name": {"any_": [f"shell WORK_AI_01 {failing}"]}}}, headers=prefect_auth(),
            timeout=10).json()
        assert [r["name"] for r in runs] == [f"shell WORK_AI_01 {failing}"]
        return dict(runs[0])

    run = settled_run(failing_run, "the failing task's run")
    assert run["state"]["type"] == "FAILED" and run["run_count"] == 2


def test_task_run_logs_name_the_task_core_action_and_attempt(queue: TaskQueue) -> None:
    """What an operator reads in the Prefect UI: the task run is named after the action, core and task,
    and every line its run logger sends says which task, core, action and attempt it is about."""
    from support import wait_until

    from flows.dispatch import dispatch
    from orch.prefect_api import prefect_http_client

    failing = put(queue, action="shell", params={"argv": ["/bin/false"]}, max_retries=1)
    done = put(queue, action="noop", core_id="WORK_AI_02")
    assert dispatch(run_for_seconds=0, concurrency=2)["finished"] == 2
    prefect = queue.settings.prefect
    api = prefect.resolved_api_url().rstrip("/")

    def messages(task_id: str, core: str, action: str, expected: int) -> list[str]:
        with prefect_http_client(prefect, timeout=10) as client:
            runs = client.post(f"{api}/task_runs/filter", json={
                "task_runs": {"name": {"any_": [f"{action} {core} {task_id}"]}}}).json()
            assert len(runs) == 1, runs
            logs = client.post(f"{api}/logs/filter", json={
                "logs": {"task_run_id": {"any_": [runs[0]["id"]]}}, "sort": "TIMESTAMP_ASC"}).json()
        everything[task_id] = [log["message"] for log in logs]
        ours = [message for message in everything[task_id] if message.startswith("task.")]
        return ours if len(ours) >= expected else []

    everything: dict[str, list[str]] = {}

    fields = f"task={failing} core=WORK_AI_01 action=shell"
    assert wait_until(lambda: messages(failing, "WORK_AI_01", "shell", 4), 30, "the failing task's run logs") == [
        f"task.started {fields} attempt=1/2",
        f"task.retrying {fields} attempt=1/2: exit code 1; next attempt in 1.0 s",
        f"task.started {fields} attempt=2/2",
        f"task.failed {fields} attempt=2/2: exit code 1"]
    assert wait_until(lambda: messages(done, "WORK_AI_02", "noop", 2), 30, "the noop task's run logs") == [
        f"task.started task={done} core=WORK_AI_02 action=noop attempt=1/3",
        f"task.completed task={done} core=WORK_AI_02 action=noop attempt=1/3"]
    # Prefect's own closing line says nothing more for a completed task (not stored: a row per task for
    # the server), and everything for a failed one (kept, with its exception). Judged once the flow run's
    # own closing line is stored: the run's log lines reach the server in the order they were written.
    with prefect_http_client(prefect, timeout=10) as client:
        flow_run = client.post(f"{api}/task_runs/filter", json={"task_runs": {"name": {"any_": [
            f"noop WORK_AI_02 {done}"]}}}).json()[0]["flow_run_id"]

        def flow_run_closed() -> bool:
            logs = client.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run]}}}).json()
            return any(log["task_run_id"] is None and log["message"].startswith("Finished in state") for log in logs)

        assert wait_until(flow_run_closed, 30, "the dispatch run's closing log line")
    messages(done, "WORK_AI_02", "noop", 2)
    messages(failing, "WORK_AI_01", "shell", 4)
    assert not [m for m in everything[done] if m.startswith("Finished in state")], everything[done]
    assert any(m.startswith("Finished in state Failed") for m in everything[failing]), everything[failing]


def test_each_attempt_names_its_prefect_task_run_and_the_console_links_it(
        queue: TaskQueue, database_url: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The claim writes ``task.started`` before Prefect names the run, so the run's id rides on the attempt's
    next write: its end for a quick task, the next lease renewal (every lease/3 = 0.5 s here) for one still
    running. The id is a real task run in Prefect, and the console's task page links to it."""
    from api_fixtures import add_users, api_for, make_settings
    from support import wait_until

    from flows.dispatch import dispatch
    from orch.config.runtime import reset_settings_cache
    from orch.prefect_api import prefect_http_client

    monkeypatch.setenv("ORCH_DISPATCH__LEASE_SECONDS", "1.5")
    reset_settings_cache()
    quick = put(queue, action="noop")
    slow = put(queue, action="sleep", params={"seconds": 4}, core_id="WORK_AI_02")

    def noted_while_running() -> str | None:
        started = [e["data"] for e in queue.events(slow) if e["event_type"] == "task.started"]
        run_id = started[-1].get("task_run_id") if started else None
        if run_id is None:
            return None
        assert queue.get(slow)["status"] == "running", "the id came only with the task's end"
        return str(run_id)

    seen: dict[str, str] = {}
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            seen["slow"] = wait_until(noted_while_running, 120, "the running task's task run id", interval=0.05)
        except BaseException as exc:  # noqa: BLE001 - asserted in the test's thread
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert dispatch(run_for_seconds=0, concurrency=2)["finished"] == 2
    watcher.join(30)
    assert errors == []

    prefect = queue.settings.prefect
    api = prefect.resolved_api_url().rstrip("/")
    ids = {}
    for task_id, name in ((quick, f"noop WORK_AI_01 {quick}"), (slow, f"sleep WORK_AI_02 {slow}")):
        started = [e["data"] for e in queue.events(task_id) if e["event_type"] == "task.started"]
        assert len(started) == 1 and set(started[0]) == {"attempt", "dispatcher", "task_run_id"}, started
        ids[task_id] = started[0]["task_run_id"]
        with prefect_http_client(prefect, timeout=10) as client:
            url = f"{api}/task_runs/{ids[task_id]}"
            answer = client.get(url)
            assert answer.status_code == 200, answer.text
            run = settled_run(lambda url=url: dict(client.get(url).json()), name)
        assert run["name"] == name and run["state"]["type"] == "COMPLETED"
    assert ids[slow] == seen["slow"]

    settings = make_settings(isolated_env, database_url)
    add_users(settings)
    with api_for(settings) as console:
        page = console.client.get(f"/ui/tasks/{quick}", headers={**console.headers("viewer"), "Accept": "text/html"})
    assert page.status_code == 200, page.text
    link = f'href="{api.removesuffix("/api")}/runs/task-run/{ids[quick]}"'
    assert page.text.count(link) == 2  # the task's Prefect links, and its attempt's row


def test_cancelled_while_running_is_not_completed(queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator cancels once the task is seen running (not after a guessed delay); the dispatcher
    learns it at its next lease renewal (every lease/3 = 0.5 s) while the 3 s task still runs. The lease
    leaves 1 s between renewals and expiry, so a loaded machine does not lose it to a retry instead."""
    from support import wait_until

    from flows.dispatch import dispatch

    monkeypatch.setenv("ORCH_DISPATCH__LEASE_SECONDS", "1.5")
    from orch.config.runtime import reset_settings_cache

    reset_settings_cache()
    task_id = put(queue, action="sleep", params={"seconds": 3}, max_retries=2)
    errors: list[BaseException] = []

    def cancel_once_running() -> None:
        try:
            wait_until(lambda: queue.get(task_id)["status"] == "running", 120, "the task to start",
                       interval=0.01)
            queue.cancel(task_id, "ops")
        except BaseException as exc:  # noqa: BLE001 - asserted in the test's thread
            errors.append(exc)

    canceller = threading.Thread(target=cancel_once_running)
    canceller.start()
    summary = dispatch(run_for_seconds=0, concurrency=2)
    canceller.join(30)
    assert errors == []
    assert summary["lost"] == 1
    assert queue.get(task_id)["status"] == "cancelled"
    assert events(queue, task_id) == ["task.created", "task.started", "task.cancelled"]


def test_http_action_against_a_loopback_server(queue: TaskQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server

    from support import free_port

    from flows.dispatch import dispatch
    from orch.config.runtime import reset_settings_cache

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            status = 200 if self.path == "/ok" else 503
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"pong" if status == 200 else b"down")

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ORCH_DISPATCH__HTTP_ALLOWLIST", "[127.0.0.1]")
    reset_settings_cache()
    queue = TaskQueue(get_settings())
    try:
        ok = put(queue, action="http", params={"url": f"http://127.0.0.1:{port}/ok"})
        down = put(queue, action="http", params={"url": f"http://127.0.0.1:{port}/down"}, max_retries=0)
        dispatch(run_for_seconds=0, concurrency=4)
    finally:
        server.shutdown()
    result = queue.get(ok)["result"]
    assert queue.get(ok)["status"] == "completed" and (result["status"], result["body"]) == (200, "pong")
    failed = queue.get(down)
    assert failed["status"] == "failed" and failed["error"] == f"HTTP 503 from http://127.0.0.1:{port}/down"


PLUGIN = '''
from orch.dispatch.actions import ActionSpec, Params

class GreetParams(Params):
    name: str

def greet(params, ctx):
    return {"greeting": f"hello {params.name}"}

SPEC = ActionSpec("greet", GreetParams, greet)
CLASH = ActionSpec("noop", GreetParams, greet)
'''


def test_plugin_actions_come_from_entry_points(tmp_path, isolated_env) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    def install(group_line: str) -> dict[str, str]:
        site = tmp_path / group_line.split(" ")[0]
        (site / "orch_greet-0.1.dist-info").mkdir(parents=True)
        (site / "orch_greet.py").write_text(PLUGIN)
        (site / "orch_greet-0.1.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: orch-greet\nVersion: 0.1\n")
        (site / "orch_greet-0.1.dist-info" / "entry_points.txt").write_text(f"[orch_next.actions]\n{group_line}\n")
        return {**os.environ, "PYTHONPATH": str(site)}

    probe = ("from orch.dispatch.actions import registry\n"
             "spec = registry()['greet']\n"
             "print(spec.run(spec.params.model_validate({'name': 'ops'}), None)['greeting'])")
    result = subprocess.run([sys.executable, "-c", probe], env=install("greet = orch_greet:SPEC"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello ops"

    clash = subprocess.run([sys.executable, "-c", "from orch.dispatch.actions import registry; registry()"],
                           env=install("noop = orch_greet:CLASH"), capture_output=True, text=True, timeout=60)
    assert "plugin action 'noop' would replace a built-in action" in clash.stderr


def test_registry_loads_once_under_a_burst_of_first_requests() -> None:
    """The first burst after a start once scanned entry points in every request thread at once."""
    import subprocess
    import sys

    probe = ("import threading\n"
             "from orch.dispatch.actions import registry\n"
             "gate, seen = threading.Barrier(16), []\n"
             "def first():\n"
             "    gate.wait()\n"
             "    seen.append(id(registry()))\n"
             "threads = [threading.Thread(target=first) for _ in range(16)]\n"
             "[t.start() for t in threads]; [t.join() for t in threads]\n"
             "print(len(seen), len(set(seen)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["16", "1"]


def test_console_keeps_an_orch_tasks_warnings_not_its_routine_lines() -> None:
    """The worker's console has each task move as ORCH's JSON line already; the run logger's routine lines
    of an ORCH task go to the Prefect server only, its warnings and errors (a retry, a failure) and
    every other task's lines are still printed."""
    import io
    import logging

    from tasks.dispatch import TASK_NAME, quiet_run_logs

    printed = io.StringIO()
    console = logging.StreamHandler(printed)
    root = logging.getLogger()
    root.addHandler(console)
    runs = logging.getLogger("test.console")  # as a run logger's records reach the root, without its API handler
    runs.setLevel(logging.INFO)
    try:
        quiet_run_logs()
        quiet_run_logs()  # idempotent: one filter per handler
        assert len(console.filters) == 1
        runs.info("task.completed ours", extra={"task_name": TASK_NAME})
        runs.warning("task.retrying ours", extra={"task_name": TASK_NAME})
        runs.info("Finished in state Completed()", extra={"task_name": "sample-host"})
    finally:
        root.removeHandler(console)
    assert printed.getvalue().splitlines() == ["task.retrying ours", "Finished in state Completed()"]
