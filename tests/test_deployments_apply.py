"""``python -m deployments.apply``: what it deploys, and that it skips the work when nothing changed (issue 17).

The applier runs at every ``orch up``. It applies in this process with Prefect's client, and only when the
fingerprint of what decides the apply changed or the server lost part of it; a skip drops the runs missed
while the stack was stopped, as a re-apply did. Everything here runs against the session's real Prefect
server, under a host name of its own so its sweep's queue is one no worker polls.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import wait_until

from deployments import apply
from deployments.applied import RECORD_FILE, load_record
from orch.deployment_spec import PREFECT_FILE, PROJECT_ROOT, deployment_spec, read_prefect_file

SWEEP = "flows/monitor_sweep.py:monitor_sweep"


def load(home: Path, **environ: str):  # noqa: ANN201 - orch.config.schema.Settings
    from orch.config.loader import load_settings

    return load_settings(environ={"ORCH_HOME": str(home), **environ}, generate_secrets=False)


def test_each_schedule_has_one_source(isolated_env: Path) -> None:
    """Cron schedules are prefect.yaml's (the docs table repeats them: it must agree); the sweep's schedule is
    ``monitoring.interval`` alone, so the file's sweep has none."""
    written = read_prefect_file()
    (sweep,) = [d for d in written["deployments"] if d["entrypoint"] == SWEEP]
    assert "schedules" not in sweep
    deployed = deployment_spec(load(isolated_env, ORCH_MONITORING__INTERVAL="17"))
    (sweep,) = [d for d in deployed["deployments"] if d["entrypoint"] == SWEEP]
    assert sweep["schedules"] == [{"interval": 17}]
    assert [d for d in deployed["deployments"] if d["entrypoint"] != SWEEP] == \
        [d for d in written["deployments"] if d["entrypoint"] != SWEEP]

    table = (PROJECT_ROOT / "docs" / "deployments.md").read_text(encoding="utf-8")
    documented = {row[0]: re.findall(r"`((?:\S+ ){4}\S+)`", row[1])
                  for row in re.findall(r"^\| `([^`]+)` \| `[^`]+` \| ([^|]+) \|", table, re.MULTILINE)}
    crons = {f"{name.partition('/')[0]}/{d['name']}": [s["cron"] for s in d.get("schedules", []) if "cron" in s]
             for name, d in zip(apply.deployment_names(written), written["deployments"], strict=True)}
    assert {name: found for name, found in documented.items() if found} == \
        {name: found for name, found in crons.items() if found}


def test_parameter_schemas_are_those_prefect_deploy_derives() -> None:
    """The schema read from each flow's source is the one ``prefect deploy`` derives from the imported flow
    (the API checks a run's parameters against it)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    from deployments.deploy import prepare

    spec = read_prefect_file(PREFECT_FILE)
    for deployment, prepared in zip(spec["deployments"], prepare(spec), strict=True):
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / deployment["entrypoint"]))
        assert prepared.arguments["parameter_openapi_schema"] == parameter_schema(flow).model_dump(
            exclude_unset=True), deployment["entrypoint"]


@pytest.fixture
def applied(prefect_server: str, isolated_env: Path) -> Iterator[Path]:
    """The record file; afterwards, what the last apply created is deleted from the shared session server (its
    schedules would otherwise keep making runs for the tests that come after)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    path = isolated_env / "data" / RECORD_FILE
    yield path
    record = load_record(path)
    with get_client(sync_client=True) as client:
        for deployment_id in record.deployments.values() if record else ():
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(uuid.UUID(deployment_id))


def run_apply(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from orch.config.runtime import reset_settings_cache

    reset_settings_cache()
    assert apply.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_apply_skips_when_unchanged_and_applies_what_changed_or_went(
        applied: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.client.orchestration import get_client

    host = f"apply-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ORCH_MONITORING__HOST_NAME", host)
    monkeypatch.setenv("ORCH_MONITORING__INTERVAL", "30")
    sweep = f"monitor-sweep/host-{host}"

    assert run_apply(capsys).startswith("applying: first apply\napplied: ")
    record_file = applied
    assert stat.S_IMODE(record_file.stat().st_mode) == 0o600
    record = load_record(record_file)
    assert record is not None and sweep in record.deployments and "db-health/hourly" in record.deployments
    with get_client(sync_client=True) as client:
        deployed = client.read_deployment_by_name(sweep)
        assert [(s.schedule.interval, s.active) for s in deployed.schedules] == [(timedelta(seconds=30), True)]
        assert deployed.work_queue_name == f"host-{host}" and deployed.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT_ROOT)}}]
        hourly = client.read_deployment_by_name("db-health/hourly")
        assert [s.schedule.cron for s in hourly.schedules] == ["0 * * * *"]

        assert run_apply(capsys).startswith(f"unchanged since {record.applied_at}: ")
        assert client.read_deployment_by_name(sweep).updated == deployed.updated  # not applied again

        client.delete_deployment(deployed.id)  # the server lost part of it: applied again
        assert run_apply(capsys).startswith(f"applying: deployment {sweep} is gone from the Prefect server\n")
        assert client.read_deployment_by_name(sweep).id != deployed.id

    monkeypatch.setenv("ORCH_MONITORING__INTERVAL", "31")  # what decides the apply changed
    assert run_apply(capsys).startswith("applying: something changed\n")
    assert run_apply(capsys, "--force").startswith("applying: forced\n")
    with get_client(sync_client=True) as client:
        intervals = [s.schedule.interval for s in client.read_deployment_by_name(sweep).schedules]
    assert intervals == [timedelta(seconds=31)]
    assert json.loads(record_file.read_text())["fingerprint"] != record.fingerprint


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_skipped_apply_drops_the_runs_missed_while_stopped(
        applied: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A re-apply deleted the auto-scheduled runs whose time had passed; a skip must too, or a restart hands
    every sweep missed while stopped to the worker at once. A run started by hand stays."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.objects import StateType

    host = f"missed-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ORCH_MONITORING__HOST_NAME", host)
    monkeypatch.setenv("ORCH_MONITORING__INTERVAL", "5")
    run_apply(capsys)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"monitor-sweep/host-{host}")
        by_hand = client.create_flow_run_from_deployment(deployment.id)  # on the same queue, nobody polls it

        def scheduled() -> list:
            return [run for run in client.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment.id])), limit=200) if run.state_type == StateType.SCHEDULED]

        def missed() -> list:  # Prefect's scheduler made them; nobody ran them in time
            return [run for run in scheduled()
                    if run.auto_scheduled and run.expected_start_time < datetime.now(timezone.utc)]

        late = wait_until(missed, 120, "an auto-scheduled sweep run to be missed")
        assert run_apply(capsys).startswith("unchanged since ")
        left = {run.id for run in scheduled()}
        assert by_hand.id in left and not {run.id for run in late} & left
