"""Zombie runs: flow runs Prefect shows Running after their executor was SIGKILLed are found by the
monitoring sweep and crashed (with their task runs), audited; live runs are never touched.

Real child processes run real flows against the session's Prefect server; the proof a run is dead is the
real one (its pid is gone, or its real heartbeats stopped). Heartbeats are judged at an explicit moment
(``now``) instead of waiting minutes for them to age.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from support import prefect_auth, wait_until

from orch.config.runtime import get_settings, reset_settings_cache
from orch.dispatch.lease_owner import EXECUTOR_LABEL
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.monitoring import rules, samples, zombies
from orch.storage.engine import session_scope
from orch.storage.migrate import upgrade
from orch.storage.models import AuditRecord
from orch.storage.types import utcnow

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DISPATCH = "from flows.dispatch import dispatch; dispatch(run_for_seconds=900, concurrency=1, poll_seconds=0.05)"
# An ORCH-tagged run with no executor label and no infrastructure_pid: only its heartbeats can tell.
HOLD = ("import time\nfrom prefect import flow, tags\n@flow(name='zombie-probe')\n"
        "def hold():\n    time.sleep(900)\nwith tags('orch'):\n    hold()\n")


@pytest.fixture
def env(prefect_server: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{isolated_env}/orch.db")
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")  # the children's and the sweep's
    monkeypatch.setenv("ORCH_DISPATCH__CORE_CONCURRENCY", "10")  # one core, one task per dispatcher
    reset_settings_cache()
    upgrade(get_settings().database, create_database=True)
    return prefect_server


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(30)


def start(children: list[subprocess.Popen[bytes]], code: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=dict(os.environ),
                                 stdout=out, stderr=subprocess.STDOUT)
    children.append(child)
    return child


def post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, headers=prefect_auth(), timeout=10)
    response.raise_for_status()
    return response.json()


def flow_run(api: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/flow_runs/{run_id}", headers=prefect_auth(), timeout=10)
    response.raise_for_status()
    return dict(response.json())


def running_run_of(api: str, child: subprocess.Popen[bytes], log: Path) -> dict[str, Any] | None:
    """The child's flow run once Prefect shows it Running with a task run Running (dispatch runs)."""
    assert child.poll() is None, f"the child exited with {child.returncode}: {log.read_text()[-2000:]}"
    runs = post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}},
                                                         "tags": {"all_": ["orch"]}}})
    for run in runs:
        owner = (run.get("labels") or {}).get(EXECUTOR_LABEL, "")
        if owner.split(":")[1:2] == [str(child.pid)]:
            return run
    return None


def task_runs(api: str, run_id: str) -> list[dict[str, Any]]:
    return list(post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}}))


def audited(resource_id: str) -> list[AuditRecord]:
    with session_scope(get_settings().database) as session:
        rows = session.scalars(select(AuditRecord).where(AuditRecord.resource_id == resource_id)).all()
        session.expunge_all()
        return list(rows)


def test_a_killed_dispatcher_run_is_crashed_with_its_task_runs_and_a_live_one_is_not(
        env: str, children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    from tasks import monitoring

    api = env
    queue = TaskQueue(get_settings())
    for _ in range(2):
        queue.enqueue(validate({"core_id": "WORK_AI_01", "action": "sleep", "params": {"seconds": 900},
                                "timeout": 1800}, queue.settings), "tester")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    killed, alive = (start(children, DISPATCH, log) for log in logs)

    def with_running_task(child: subprocess.Popen[bytes], log: Path) -> dict[str, Any] | None:
        run = running_run_of(api, child, log)
        if run and any(t["state_type"] == "RUNNING" for t in task_runs(api, run["id"])):
            return run
        return None

    def shown() -> str:
        """What Prefect shows Running, and the children's log tails (when a wait times out)."""
        runs = post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}})
        return "\n".join([*(f"{r['name']} {r['tags']} {r.get('labels')} "
                             f"{[(t['name'], t['state_type']) for t in task_runs(api, r['id'])]}" for r in runs),
                           *(log.read_text()[-2000:] for log in logs)])

    killed_run = wait_until(lambda: with_running_task(killed, logs[0]), 120, "the first dispatch run's task to run",
                            details=shown)
    alive_run = wait_until(lambda: with_running_task(alive, logs[1]), 120, "the second dispatch run's task to run",
                           details=shown)
    assert set(killed_run["tags"]) >= {"orch", "dispatch"}
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    assert flow_run(api, killed_run["id"])["state_type"] == "RUNNING"  # what Prefect alone leaves behind

    found = monitoring.prefect_zombies.fn()  # the sweep's step: detect and heal
    count = [s.value for s in found if s.metric == "prefect_zombie_runs"]
    assert count and count[0] >= 1, found
    samples.store(get_settings(), found)
    observed = {o.alert_name: o for o in rules.evaluate(get_settings(), [], utcnow())}
    assert observed["prefect_zombie_runs"].state == "firing"
    assert observed["prefect_zombie_runs"].severity == "warning"

    crashed = flow_run(api, killed_run["id"])
    assert crashed["state_type"] == "CRASHED", crashed["state"]
    message = crashed["state"]["message"]
    assert f"pid {killed.pid} no longer exists" in message and "Running since" in message, message
    assert killed_run["labels"][EXECUTOR_LABEL] in message  # which executor
    its_tasks = task_runs(api, killed_run["id"])
    assert its_tasks and all(t["state_type"] == "CRASHED" for t in its_tasks), its_tasks
    assert message in its_tasks[0]["state"]["message"]
    entry = audited(killed_run["id"])
    assert [(e.actor, e.action, e.success) for e in entry] == [("system:monitor", "prefect.flow_run.crash", True)]
    assert entry[0].details["task_runs"] == len(its_tasks)
    assert [e.action for e in audited(its_tasks[0]["id"])] == ["prefect.task_run.crash"]

    # The live run is untouched, by this pass and by the next; and the next finds nothing (idempotent) even
    # judged an hour on, when its heartbeats would be stale: a live executor on this host vetoes them.
    assert flow_run(api, alive_run["id"])["state_type"] == "RUNNING"
    again = zombies.heal(get_settings(), now=utcnow() + timedelta(hours=1))
    assert alive_run["id"] not in {z.flow_run_id for z in again.zombies}
    assert killed_run["id"] not in {z.flow_run_id for z in again.zombies}
    assert flow_run(api, alive_run["id"])["state_type"] == "RUNNING"
    assert any(t["state_type"] == "RUNNING" for t in task_runs(api, alive_run["id"]))
    assert len(audited(killed_run["id"])) == 1
    assert zombies.heal(get_settings()).zombies == []

    alive.send_signal(signal.SIGKILL)
    alive.wait(30)
    assert zombies.heal(get_settings()).crashed == [alive_run["id"]]
    assert flow_run(api, alive_run["id"])["state_type"] == "CRASHED"


def test_a_run_with_no_executor_here_is_judged_by_its_heartbeats(
        env: str, children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    api = env
    log = tmp_path / "hold.log"
    child = start(children, HOLD, log)

    def running() -> dict[str, Any] | None:
        assert child.poll() is None, f"the child exited with {child.returncode}: {log.read_text()[-2000:]}"
        runs = post(api, "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}},
                                                             "tags": {"all_": ["orch"]}},
                                               "flows": {"name": {"any_": ["zombie-probe"]}}})
        return runs[0] if runs else None

    run = wait_until(running, 120, "the probe flow run to be Running")
    assert not run.get("infrastructure_pid") and EXECUTOR_LABEL not in (run.get("labels") or {})

    def heartbeat() -> datetime | None:
        events = post(api, "/events/filter", {"filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{run['id']}"]}}, "limit": 1})["events"]
        return datetime.fromisoformat(events[0]["occurred"]) if events else None

    beat = wait_until(heartbeat, 120, "the probe run's first heartbeat")
    child.send_signal(signal.SIGKILL)
    child.wait(30)

    def judged(now: datetime) -> set[str]:
        return {z.flow_run_id for z in zombies.heal(get_settings(), now=now).zombies}

    assert run["id"] not in judged(utcnow())  # just started: no heartbeat missed yet
    # One heartbeat tells no cadence: Prefect's default (180 s) is assumed, not the sweep's 30 s, so an
    # executor configured differently is not crashed after 3 x 30 s.
    assert run["id"] not in judged(beat + timedelta(seconds=3 * 180 - 5))
    assert flow_run(api, run["id"])["state_type"] == "RUNNING"
    assert run["id"] in judged(beat + timedelta(seconds=3 * 180 + 5))
    crashed = flow_run(api, run["id"])
    assert crashed["state_type"] == "CRASHED"
    assert "no heartbeat from its executor since" in crashed["state"]["message"], crashed["state"]
    assert [e.action for e in audited(run["id"])] == ["prefect.flow_run.crash"]


def test_heartbeat_frequency_is_read_as_prefect_reads_it() -> None:
    assert zombies.heartbeat_seconds({}) == zombies.PREFECT_DEFAULT_HEARTBEAT
    assert zombies.heartbeat_seconds({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}) == 45
    assert zombies.heartbeat_seconds({"PREFECT_RUNNER_HEARTBEAT_FREQUENCY": "60"}) == 60  # Prefect's old name
    assert zombies.heartbeat_seconds({"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "5"}) == zombies.MINIMUM_HEARTBEAT


def test_the_in_process_worker_labels_the_runs_it_executes_and_a_live_executor_is_left_alone(env: str) -> None:
    """The label is what lets a sweep prove an in-process run (sweep, self-heal) dead after a worker SIGKILL;
    here the executor is this very process, so the run is alive and no heartbeat age can crash it."""
    import uuid

    import anyio
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    from deployments.apply import ensure_work_pools
    from orch.stack.inprocess import InProcessWorker

    pool = f"orch-inprocess-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])

    @flow(name="zombie-label-probe")
    def probe() -> None:
        """Never called: a flow object for the run the worker is handed."""

    with get_client(sync_client=True) as client:
        created = client.create_flow_run(probe, tags=["orch"], state=Running())

    async def label() -> None:
        async with InProcessWorker(work_pool_name=pool, name="zombie-label-test") as worker:
            await worker._label_executor(created)

    anyio.run(label)
    run = flow_run(env, str(created.id))
    owner = run["labels"][EXECUTOR_LABEL]
    assert owner.split(":")[1] == str(os.getpid()), owner
    judged = zombies.heal(get_settings(), now=utcnow() + timedelta(hours=1))
    assert str(created.id) not in {z.flow_run_id for z in judged.zombies}
    assert flow_run(env, str(created.id))["state_type"] == "RUNNING"
    with get_client(sync_client=True) as client:  # leave nothing Running for the tests after this one
        client.set_flow_run_state(created.id, Completed(), force=True)


def test_a_restarted_worker_crashes_the_runs_its_killed_predecessor_left_running_at_once(
        env: str, children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """`orch up` restarts a SIGKILLed worker; the new one crashes what the dead one left Running as it starts,
    without waiting for a sweep (its pool here has no sweep deployment: no sweep ever runs)."""
    import uuid

    from deployments.apply import ensure_work_pools

    api = env
    log = tmp_path / "dispatch.log"
    killed = start(children, DISPATCH, log)
    dead = wait_until(lambda: running_run_of(api, killed, log), 120, "the dispatch run to be Running",
                      details=lambda: log.read_text()[-2000:])
    killed.send_signal(signal.SIGKILL)
    killed.wait(30)
    pool = f"orch-inprocess-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "orch.stack.worker", "--no-process", "--no-dispatcher",
                                   "--inprocess-pool", pool, "--name", "restarted"], cwd=PROJECT_ROOT,
                                  env=dict(os.environ), stdout=out, stderr=subprocess.STDOUT)
    children.append(worker)

    def crashed() -> bool:
        assert worker.poll() is None, f"the worker exited with {worker.returncode}: {worker_log.read_text()[-2000:]}"
        return flow_run(api, dead["id"])["state_type"] == "CRASHED"

    wait_until(crashed, 120, "the restarted worker to crash its predecessor's run",
               details=lambda: worker_log.read_text()[-2000:])
    assert "its executor" in flow_run(api, dead["id"])["state"]["message"]
    assert [row.action for row in audited(dead["id"])] == ["prefect.flow_run.crash"]
    worker.terminate()  # perhaps still starting: how it stops is test_inprocess_worker's question
    worker.wait(60)
