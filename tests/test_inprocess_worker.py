"""ORCH's worker process with its in-process pool, as ``orch up`` starts it: a real Prefect server, the real
``python -m orch.stack.worker`` (dispatcher included) and deployments of ORCH's own flows on the pool.

One worker process for all of it: a flow run that fails in a thread leaves the worker and its dispatcher
running; a deployment that is not one of this checkout's flows is refused with the reason; a run due
later starts at its time, not a poll later; SIGTERM while a run is in progress exits 0 after the stop
window the worker gives it and reports that run Crashed, never left Running.

Nothing here waits a fixed time for the worker to "get somewhere": each step waits for what the worker
shows (a line of its log, a run's state, an audit row), and the worker's periodic poll is an hour, so
a run that starts did so through the event or the start-time poll under test, not by chance."""

from __future__ import annotations

import contextlib
import signal
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import run_orch, wait_until
from workers import PROJECT_ROOT, inprocess_worker, unreachable_target

from orch.config.runtime import get_settings, reset_settings_cache
from orch.storage.migrate import upgrade

pytestmark = pytest.mark.slow  # a real worker process running deployments


def final_state(client: Any, run_id: uuid.UUID, within: float) -> Any:
    """The flow run once it is in a final state (Completed, Failed, Crashed...)."""
    def final() -> Any:
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_until(final, within, f"flow run {run_id} to reach a final state",
                      details=lambda: f"state: {client.read_flow_run(run_id).state}")


def audit_actions() -> list[str]:
    """The audit trail's actions in order: self-healing records each step as it goes."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import AuditRecord

    with session_scope(get_settings().database) as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)))


@pytest.mark.timeout(300)
def test_inprocess_runs_fail_alone_refuse_foreign_code_and_stop_cleanly(
        prefect_server: str, isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Scheduled

    from deployments.apply import ensure_work_pools
    from flows.self_heal import self_heal
    from orch.stack.inprocess import STOP_GRACE_SECONDS  # imports Prefect: only once the server is known

    config = {"database": {"url": f"sqlite:///{isolated_env}/data/orch.db"},
              "monitoring": {"orch_targets": False,
                             # restart "works" but the check never passes: the run stays in its health check
                             "self_healing": {"max_retries": 1, "settle_seconds": 60},
                             "targets": [unreachable_target("stuck")]}}
    config_path = isolated_env / "orch.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ORCH_CONFIG_PATH", str(config_path))
    reset_settings_cache()
    upgrade(get_settings().database, create_database=True)
    pool = f"orch-inprocess-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])
    worker_log = tmp_path / "worker.log"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(self_heal.name)
        ours = client.create_deployment(flow_id, "inprocess-test", work_pool_name=pool, path=str(PROJECT_ROOT),
                                        entrypoint="flows/self_heal.py:self_heal")
        foreign = client.create_deployment(flow_id, "inprocess-foreign", work_pool_name=pool, path="/tmp",
                                           entrypoint="/tmp/elsewhere.py:self_heal")

        stack = contextlib.ExitStack()
        # DEBUG: the worker logs the start-time polls it arms. Prefect's default periodic poll (10 s) stays: it
        # is the product's fallback for a Scheduled event that does not lead to a start (seen once in CI), so
        # without it the test would assert more than ORCH promises.
        worker = stack.enter_context(inprocess_worker(
            pool, "inprocess-test", worker_log, env={"ORCH_LOG_LEVEL": "DEBUG", "PREFECT_WORKER_QUERY_SECONDS": "10"}))

        def logged(text: str) -> bool:
            assert worker.poll() is None, f"the worker exited with code {worker.returncode}"
            return text in worker_log.read_text()

        def log_tail() -> str:
            return worker_log.read_text()[-3000:]

        try:
            wait_until(lambda: logged(f"listening for runs scheduled in work pool {pool}"), 90,
                       "the worker to subscribe to its pool's Scheduled events", details=log_tail)

            failing = client.create_flow_run_from_deployment(ours, parameters={"target": "no-such-target"})
            failed = final_state(client, failing.id, 60)
            assert failed.state.is_failed() and "no-such-target" in failed.state.message
            assert failed.infrastructure_pid and failed.infrastructure_pid.startswith("orch-inprocess:")

            refused = final_state(client, client.create_flow_run_from_deployment(foreign).id, 60)
            assert refused.state.is_crashed()
            assert "'/tmp/elsewhere.py:self_heal' is not a flow module of" in refused.state.message

            dispatched = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", "--wait", timeout=120)
            assert '"status": "completed"' in dispatched.stdout, dispatched.stdout + dispatched.stderr
            assert worker.poll() is None  # the failed run took neither the worker nor its dispatcher down

            # Due in 3 s. Its Scheduled event makes the worker poll while it is not yet due and arm a poll for its
            # start time; whichever poll starts it, never before that time.
            due = datetime.now(timezone.utc) + timedelta(seconds=3)
            later = client.create_flow_run_from_deployment(ours, parameters={"target": "stuck", "dry_run": True},
                                                           state=Scheduled(scheduled_time=due))
            planned = final_state(client, later.id, 60)
            assert planned.state.is_completed() and planned.start_time is not None
            assert planned.start_time >= due, planned.start_time - due

            running = client.create_flow_run_from_deployment(ours, parameters={"target": "stuck"})
            wait_until(lambda: "heal.restart" in audit_actions(), 60,  # restarted: now in its minute-long check
                       "the self-heal run to restart its target",
                       details=lambda: str(client.read_flow_run(running.id).state))
            assert client.read_flow_run(running.id).state.is_running()
            # Due after the stop: the worker sees it (its Scheduled event), arms a poll for its start time and
            # must not take it early, so the stop cannot lose it.
            waiting = client.create_flow_run_from_deployment(
                ours, parameters={"target": "stuck", "dry_run": True},
                state=Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(seconds=9)))
            wait_until(lambda: logged(f"flow run {waiting.id} is due in "), 30,
                       "the worker to arm the poll at the waiting run's start time", details=log_tail)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0, log_tail()
            crashed = client.read_flow_run(running.id)
            assert crashed.state.is_crashed(), crashed.state
            assert crashed.state.message == ("the ORCH worker stopped while this run was in progress "
                                             f"(it had {STOP_GRACE_SECONDS:g} s to finish)")
            assert f"reported Crashed: {crashed.name}" in worker_log.read_text()  # by the drain, in its window
            assert client.read_flow_run(waiting.id).state.is_scheduled()  # not taken early, so not lost
        finally:
            stack.close()
            # The server is shared by the session: a run left Scheduled would soon be overdue, and every
            # later sweep would report Prefect as stalled (prefect_lag_seconds).
            for deployment_id in (ours, foreign):
                for run in client.read_flow_runs(limit=200, deployment_filter=DeploymentFilter(
                        id=DeploymentFilterId(any_=[deployment_id]))):
                    with contextlib.suppress(Exception):
                        client.delete_flow_run(run.id)
                with contextlib.suppress(Exception):
                    client.delete_deployment(deployment_id)
