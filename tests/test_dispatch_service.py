"""Dispatcher service processes and the CLI, as an operator uses them: real processes, real Prefect
server, SQLite and PostgreSQL. Includes a dispatcher killed with SIGKILL in the middle of a task."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import pytest
from support import prefect_auth, run_orch, settled_run, wait_until
from workers import dispatcher_service

from orch.config.loader import load_settings
from orch.dispatch.queue import TaskQueue
from orch.storage.migrate import upgrade

pytestmark = pytest.mark.slow  # dispatcher processes killed and restarted, CLI chains


@pytest.fixture
def env(prefect_server: str, database_url: str, isolated_env: Path) -> dict[str, str]:
    """A short lease (2 s) so a killed dispatcher's task comes back quickly; not shorter, because a live
    dispatcher renews every lease/3 and must not lose a lease to a loaded machine's scheduling delays."""
    values = {"DATABASE_URL": database_url, "PREFECT_API_URL": prefect_server,
              "ORCH_DISPATCH__LEASE_SECONDS": "2", "ORCH_DISPATCH__SHELL_ALLOWLIST": "[/bin/false]"}
    upgrade(load_settings(environ={**os.environ, **values}, generate_secrets=False).database)
    return values


def queue_for(env: dict[str, str]) -> TaskQueue:
    return TaskQueue(load_settings(environ={**os.environ, **env}, generate_secrets=False))


def wait_status(queue: TaskQueue, task_id: str, status: str, within: float) -> dict:
    """Poll the queue of record until the task is in ``status`` (``within`` is a generous deadline)."""
    return wait_until(lambda: (task := queue.get(task_id))["status"] == status and task, within,
                      f"task {task_id} to be {status}", details=lambda: str(queue.get(task_id)), interval=0.05)


def dispatch_json(env: dict[str, str], *args: str) -> tuple[int, dict]:
    result = run_orch("dispatch", "--core", "WORK_AI_01", *args, env=env, timeout=120)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_cli_dispatch_wait_and_manage(env: dict[str, str], tmp_path: Path) -> None:
    code, queued = dispatch_json(env, "--action", "noop", "--priority", "high", "--idempotency-key", "k1",
                                 "--tag", "nightly")
    assert code == 0 and queued["status"] == "queued" and queued["created"] is True
    assert (queued["priority"], queued["metadata"]["tags"]) == ("high", ["nightly"])
    assert queued["owner"].startswith("cli:") and queued["metadata"]["source"] == "cli"
    _, again = dispatch_json(env, "--action", "noop", "--idempotency-key", "k1")
    assert again["task_id"] == queued["task_id"] and again["created"] is False

    bad = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "shell", "--param", 'argv=["rm", "-rf", "/"]',
                   env=env)
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: invalid task: params.argv.0: 'rm' is not allow-listed; "
                                  "allowed: /bin/false")

    with dispatcher_service(tmp_path / "dispatcher.log", env):
        code, done = dispatch_json(env, "--action", "sleep", "--param", "seconds=0.2", "--wait")
        assert code == 0 and done["status"] == "completed" and done["result"] == {"slept": 0.2}
        code, failed = dispatch_json(env, "--action", "shell", "--param", 'argv=["/bin/false"]',
                                     "--max-retries", "0", "--wait")
        assert code == 1 and failed["status"] == "failed" and failed["error"] == "exit code 1"
        assert wait_status(queue_for(env), queued["task_id"], "completed", 30)

    reset = run_orch("tasks", "reset-failed", env=env)
    assert reset.returncode == 0 and reset.stdout.startswith("re-queued 1 task(s)")
    assert failed["task_id"] in reset.stdout
    cancelled = run_orch("tasks", "cancel", failed["task_id"], env=env)
    assert cancelled.stdout.strip() == f"task {failed['task_id']} cancelled"
    again = run_orch("tasks", "cancel", failed["task_id"], env=env)
    assert again.returncode == 1 and again.stderr.strip() == f"error: task {failed['task_id']} is already cancelled"

    shown = json.loads(run_orch("tasks", "show", failed["task_id"], env=env).stdout)
    assert [e["event_type"] for e in shown["events"]] == [
        "task.created", "task.started", "task.failed", "task.retrying", "task.cancelled"]
    listing = run_orch("tasks", "list", "--status", "completed", env=env).stdout
    assert queued["task_id"] in listing and listing.strip().endswith("queued: critical 0, high 0, normal 0, low 0")
    assert run_orch("tasks", "show", "nope", env=env).stderr.strip() == "error: no task nope"


def test_cli_dispatches_an_admin_flow_as_the_local_administrator(env: dict[str, str]) -> None:
    """The CLI runs on the host with the database and the secrets: its tasks (owner ``cli:<login>``) act as
    admin when dispatched and when they run, where an API operator's are refused (test_api_authz_effects)."""
    from orch.security.flow_access import role_of_owner

    code, queued = dispatch_json(env, "--action", "run-deployment", "--param", "name=restore/manual")
    assert code == 0 and queued["status"] == "queued" and queued["owner"].startswith("cli:")
    queue = queue_for(env)
    assert role_of_owner(queue.database, queued["owner"]) == "admin"  # what the run-time check will read
    queue.cancel(queued["task_id"], "test")  # nothing here may start a restore


def test_dispatcher_killed_mid_task_completes_it_exactly_once(env: dict[str, str], tmp_path: Path) -> None:
    queue = queue_for(env)
    code, task = dispatch_json(env, "--action", "sleep", "--param", "seconds=2", "--max-retries", "1")
    assert code == 0
    with dispatcher_service(tmp_path / "first.log", env) as first:
        running = wait_status(queue, task["task_id"], "running", 60)
        assert running["attempts"] == 1
        first.send_signal(signal.SIGKILL)  # no goodbye: the lease is all that is left
        first.wait(10)
    # Started at once on the same host: it proves the dead one's pid is gone and takes the task back at
    # once, without waiting out the lease (issue 15).
    with dispatcher_service(tmp_path / "second.log", env) as second:
        done = wait_status(queue, task["task_id"], "completed", 60)
        second.send_signal(signal.SIGTERM)  # as a service manager stops it: finish, then exit cleanly
        assert second.wait(15) == 0
    flow_runs = httpx.post(f"{env['PREFECT_API_URL']}/flow_runs/filter", json={
        "flows": {"name": {"any_": ["dispatch"]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 1},
        headers=prefect_auth(), timeout=10).json()
    assert flow_runs[0]["state"]["type"] == "COMPLETED", flow_runs[0]["state"]
    assert done["attempts"] == 2
    events = queue.events(task["task_id"])
    assert [e["event_type"] for e in events] == [
        "task.created", "task.started", "task.retrying", "task.started", "task.completed"]
    assert "is gone (pid" in events[2]["data"]["reason"], events[2]["data"]


def test_stopping_dispatcher_keeps_its_leases_so_nothing_runs_twice(env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM: the stopping dispatcher finishes its running task, renewing the lease meanwhile, so a
    second dispatcher never starts the same task alongside it."""
    queue = queue_for(env)
    _, task = dispatch_json(env, "--action", "sleep", "--param", "seconds=4", "--max-retries", "1")
    with dispatcher_service(tmp_path / "first.log", env) as first:
        wait_status(queue, task["task_id"], "running", 60)
        with dispatcher_service(tmp_path / "second.log", env):
            first.send_signal(signal.SIGTERM)
            assert first.wait(30) == 0  # it waited for its task, then exited cleanly
            done = wait_status(queue, task["task_id"], "completed", 30)
    assert done["attempts"] == 1
    assert [e["event_type"] for e in queue.events(task["task_id"])] == [
        "task.created", "task.started", "task.completed"]


def test_second_signal_hands_running_tasks_back_at_once(env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM, then SIGTERM again (Ctrl-C twice): the dispatcher stops waiting for its running task. The
    task goes back to the queue at once (its lease released, not left to lapse), its task run is reported
    Cancelled and its dispatch run Completed saying the stack stopped, and the process exits 0 although
    the action's thread is still inside a 600 s sleep: nothing is left Running in Prefect."""
    queue = queue_for(env)
    _, task = dispatch_json(env, "--action", "sleep", "--param", "seconds=600", "--max-retries", "1")
    log = tmp_path / "dispatcher.log"
    with dispatcher_service(log, env) as first:
        wait_status(queue, task["task_id"], "running", 60)
        first.send_signal(signal.SIGTERM)
        wait_until(lambda: "waiting for 1 running task(s)" in log.read_text(), 60,
                   "the dispatcher to say it is waiting for its task", details=log.read_text)
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0, log.read_text()
    back = queue.get(task["task_id"])
    assert (back["status"], back["attempts"]) == ("queued", 1), back
    events = queue.events(task["task_id"])
    assert [e["event_type"] for e in events] == ["task.created", "task.started", "task.retrying"]
    assert events[2]["data"]["reason"] == "handed back: its dispatcher stopped while it ran"
    api, auth = env["PREFECT_API_URL"], prefect_auth()
    run = settled_run(lambda: dict(httpx.get(f"{api}/task_runs/{events[1]['data']['task_run_id']}", headers=auth,
                                             timeout=10).json()), "the handed-back task's run")
    assert run["state"]["type"] == "CANCELLED", run["state"]
    flow_run = httpx.get(f"{api}/flow_runs/{run['flow_run_id']}", headers=auth, timeout=10).json()
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    assert flow_run["state"]["message"].endswith("handed back to the queue 1"), flow_run["state"]
    queue.cancel(task["task_id"], "test")  # no later dispatcher of this database may sleep 600 s
