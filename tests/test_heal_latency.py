"""The first heal at a short interval (issue 15, item 0): a fresh ``orch up`` must sweep at
``monitoring.interval`` from its first scheduled run.

The cause of the 45 s first heal at ``monitoring.interval: 5``: the sweep was deployed with ``prefect.yaml``'s
60 s and corrected afterwards; Prefect's scheduler could create 60 s runs in between, and the correction
(a schedule update) neither replaced them for sure nor marked the deployment as recently updated, so the
first 5 s runs waited for the scheduler's main loop. ORCH now deploys the configured interval itself.
These tests check that mechanism on a real Prefect server, not how long anything takes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from support import wait_until

from orch.config.loader import load_settings

SWEEP = "flows/monitor_sweep.py:monitor_sweep"


def settings_at(home: Path, interval: int):  # noqa: ANN201 - orch.config.schema.Settings
    return load_settings(environ={"ORCH_MONITORING__INTERVAL": str(interval), "ORCH_HOME": str(home)},
                         generate_secrets=False)


@pytest.mark.parametrize("interval", [5, 60, 300])
def test_orch_deploys_the_sweep_at_the_configured_interval(isolated_env: Path, interval: int) -> None:
    """The spec ``orch up`` deploys carries ``monitoring.interval`` on the sweep, and changes nothing else."""
    import yaml

    from deployments.apply import PREFECT_FILE, deployment_spec

    spec = deployment_spec(settings_at(isolated_env, interval))
    original = yaml.safe_load(PREFECT_FILE.read_text(encoding="utf-8"))
    (sweep,) = [d for d in spec["deployments"] if d["entrypoint"] == SWEEP]
    assert sweep["schedules"] == [{"interval": interval}]
    others = [d for d in spec["deployments"] if d["entrypoint"] != SWEEP]
    assert others == [d for d in original["deployments"] if d["entrypoint"] != SWEEP]


@pytest.mark.timeout(300)
def test_every_scheduled_sweep_run_follows_the_configured_interval(prefect_server: str, isolated_env: Path) -> None:
    """Deployed by ORCH at interval 5, the runs Prefect's scheduler creates are 5 s apart from the first: no run
    at the file's 60 s exists at any point (the old path deployed 60 s, then corrected the schedule)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from deployments.apply import apply_deployments, deployment_spec, ensure_work_pools
    from flows.monitor_sweep import monitor_sweep

    spec = deployment_spec(settings_at(isolated_env, 5))
    (sweep,) = [d for d in spec["deployments"] if d["entrypoint"] == SWEEP]
    # Its own name and pool on the shared server; the pool has no worker, so nothing runs.
    pool, name = f"latency-{uuid.uuid4().hex[:8]}", f"interval-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])
    spec["deployments"] = [{**sweep, "name": name, "work_pool": {"name": pool}}]
    apply_deployments(spec)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"{monitor_sweep.name}/{name}")
        try:
            (entry,) = deployment.schedules
            assert entry.schedule.interval == timedelta(seconds=5) and entry.active

            def scheduled() -> list:
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[deployment.id])), limit=200)
                return sorted((run.expected_start_time for run in runs if run.auto_scheduled),
                              key=lambda at: at.timestamp()) if len(runs) >= 3 else []

            starts = wait_until(scheduled, 120, "Prefect's scheduler to create the sweep's runs")
            gaps = {(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:], strict=False)}
            assert gaps == {5.0}, starts
        finally:
            client.delete_deployment(deployment.id)
            client.delete_work_pool(pool)
