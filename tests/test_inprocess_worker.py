"""ORCH's worker process with its in-process pool, as ``orch up`` starts it: a real Prefect server, the real
``python -m orch.stack.worker`` (dispatcher included) and deployments of ORCH's own flows on the pool.

One worker process for all of it: a flow run that fails in a thread leaves the worker and its dispatcher
running; a deployment that is not one of this checkout's flows is refused with the reason; a run due
later starts at its time, not a poll later; SIGTERM while a run is in progress exits 0 within the stop
window and reports that run Crashed, never left Running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import free_port, run_orch

from orch.config.runtime import get_settings, reset_settings_cache
from orch.storage.migrate import upgrade

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def final_state(client: Any, run_id: uuid.UUID, within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(0.2)
    raise AssertionError(f"flow run {run_id} not final within {within} s: {client.read_flow_run(run_id).state}")


@pytest.mark.timeout(180)
def test_inprocess_runs_fail_alone_refuse_foreign_code_and_stop_cleanly(
        prefect_server: str, isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Scheduled

    from deployments.apply import ensure_work_pools
    from flows.self_heal import self_heal
    from orch.prefect_api import online_workers

    config = {"database": {"url": f"sqlite:///{isolated_env}/data/orch.db"},
              "monitoring": {"orch_targets": False,
                             # restart "works" but the check never passes: the run stays in its health check
                             "self_healing": {"max_retries": 1, "settle_seconds": 60},
                             "targets": [{"name": "stuck",
                                          "health_check": {"url": f"http://127.0.0.1:{free_port()}/", "timeout": 1},
                                          "restart": {"command": ["/bin/true"]}}]}}
    config_path = isolated_env / "orch.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ORCH_CONFIG_PATH", str(config_path))
    reset_settings_cache()
    upgrade(get_settings().database, create_database=True)
    pool = f"orch-inprocess-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(self_heal.name)
        ours = client.create_deployment(flow_id, "inprocess-test", work_pool_name=pool, path=str(PROJECT_ROOT),
                                        entrypoint="flows/self_heal.py:self_heal")
        foreign = client.create_deployment(flow_id, "inprocess-foreign", work_pool_name=pool, path="/tmp",
                                           entrypoint="/tmp/elsewhere.py:self_heal")

        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
        worker = subprocess.Popen([sys.executable, "-m", "orch.stack.worker", "--no-process", "--inprocess-pool",
                                   pool, "--name", "inprocess-test"], cwd=PROJECT_ROOT, env=dict(os.environ),
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while online_workers(prefect_server, pool) != 1:
                assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.3)

            failing = client.create_flow_run_from_deployment(ours, parameters={"target": "no-such-target"})
            failed = final_state(client, failing.id, 30)
            assert failed.state.is_failed() and "no-such-target" in failed.state.message
            assert failed.infrastructure_pid and failed.infrastructure_pid.startswith("orch-inprocess:")

            refused = final_state(client, client.create_flow_run_from_deployment(foreign).id, 30)
            assert refused.state.is_crashed()
            assert "'/tmp/elsewhere.py:self_heal' is not a flow module of" in refused.state.message

            dispatched = run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", "--wait", timeout=60)
            assert '"status": "completed"' in dispatched.stdout, dispatched.stdout + dispatched.stderr
            assert worker.poll() is None  # the failed run took neither the worker nor its dispatcher down

            # Due in 3 s: taken at its start time (the worker polls only every 10 s, Prefect's default).
            due = datetime.now(timezone.utc) + timedelta(seconds=3)
            later = client.create_flow_run_from_deployment(ours, parameters={"target": "stuck", "dry_run": True},
                                                           state=Scheduled(scheduled_time=due))
            planned = final_state(client, later.id, 30)
            assert planned.state.is_completed() and planned.start_time is not None
            assert timedelta(0) <= planned.start_time - due < timedelta(seconds=1.5), planned.start_time - due

            running = client.create_flow_run_from_deployment(ours, parameters={"target": "stuck"})
            deadline = time.monotonic() + 30
            while not client.read_flow_run(running.id).state.is_running():
                assert time.monotonic() < deadline, client.read_flow_run(running.id).state
                time.sleep(0.2)
            waiting = client.create_flow_run_from_deployment(  # due after the stop: must stay Scheduled
                ours, parameters={"target": "stuck", "dry_run": True},
                state=Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(seconds=8)))
            time.sleep(1)  # into its health check, which would go on for a minute
            stopped = time.monotonic()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(15) == 0, (tmp_path / "worker.log").read_text()
            assert time.monotonic() - stopped < 10
            crashed = client.read_flow_run(running.id)
            assert crashed.state.is_crashed(), crashed.state
            assert crashed.state.message.startswith("the ORCH worker stopped while this run was in progress")
            assert client.read_flow_run(waiting.id).state.is_scheduled()  # not taken early, so not lost
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            log.close()
            # The server is shared by the session: a run left Scheduled would soon be overdue, and every
            # later sweep would report Prefect as stalled (prefect_lag_seconds).
            for deployment_id in (ours, foreign):
                for run in client.read_flow_runs(limit=200, deployment_filter=DeploymentFilter(
                        id=DeploymentFilterId(any_=[deployment_id]))):
                    with contextlib.suppress(Exception):
                        client.delete_flow_run(run.id)
                with contextlib.suppress(Exception):
                    client.delete_deployment(deployment_id)
