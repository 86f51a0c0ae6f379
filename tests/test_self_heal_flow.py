"""The monitor-sweep and self-heal flows on the real Prefect server, against real processes on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from receivers import HttpReceiver, http_receiver
from support import free_port, wait_until

from orch.config.runtime import get_settings, reset_settings_cache
from orch.storage.migrate import upgrade


class Service:
    """A small HTTP service (``python -m http.server`` with a /health file) the test can kill and restart."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        (directory / "www").mkdir(parents=True, exist_ok=True)
        (directory / "www" / "health").write_text("ok")
        self.pid_file = directory / "service.pid"
        # What self-healing runs to restart it: detached, output closed, pid recorded for the test's cleanup.
        self.start_command = ["/bin/sh", "-c", (f"{sys.executable} -m http.server {self.port} --bind 127.0.0.1 "
                              f"--directory {directory / 'www'} >/dev/null 2>&1 & echo $! > {self.pid_file}")]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    def start(self) -> None:
        subprocess.run(self.start_command, check=True, timeout=30)
        self.wait(True)

    def kill(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGKILL)
        self.wait(False)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self, healthy: bool, timeout: float = 60) -> None:
        wait_until(lambda: self.healthy() == healthy, timeout, f"the service to be {'healthy' if healthy else 'down'}",
                   interval=0.1)

    def stop(self) -> None:
        if self.pid_file.exists():
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(int(self.pid_file.read_text()), signal.SIGKILL)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "svc")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def slack() -> Iterator[HttpReceiver]:
    with http_receiver() as receiver:
        yield receiver


def configure(home: Path, monkeypatch: pytest.MonkeyPatch, slack: HttpReceiver, target: dict[str, Any],
              **healing: Any) -> None:
    """Write the config file the flows load (get_settings) and migrate its database."""
    config = {"monitoring": {"interval": 5, "orch_targets": False, "targets": [target],
                             "alerting": {"for_seconds": 0},
                             # this shared 2-core machine is busy: only the target may alert here
                             "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100,
                                                  "disk_usage_percent": 100,
                                                  # runs earlier tests killed on the shared Prefect server
                                                  # are healed by any sweep; they must not alert here
                                                  "prefect_zombie_runs": 1_000_000},
                             "self_healing": {"max_retries": 2, "backoff_seconds": 0.1, "settle_seconds": 3,
                                              **healing}},
              "notifications": {"slack": {"webhook_url": slack.url}}}
    path = home / "orch.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ORCH_CONFIG_PATH", str(path))
    reset_settings_cache()
    upgrade(get_settings().database, create_database=True)


@pytest.fixture
def heal_deployment(prefect_server: str) -> Iterator[Any]:
    """``self-heal/auto`` on a pool of its own with no worker: the runs a sweep creates stay Scheduled, to be
    read; deleted afterwards with its runs (a run left Scheduled would count as Prefect lagging later)."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from deployments.apply import PROJECT_ROOT, ensure_work_pools
    from flows.self_heal import self_heal

    pool = f"heal-{uuid.uuid4().hex[:8]}"
    ensure_work_pools([pool], inprocess=[pool])
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(client.create_flow_from_name(self_heal.name), "auto",
                                              work_pool_name=pool, path=str(PROJECT_ROOT),
                                              entrypoint="flows/self_heal.py:self_heal")

        def runs() -> list[Any]:
            return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment])))

        try:
            yield runs
        finally:
            for run in runs():
                client.delete_flow_run(run.id)
            client.delete_deployment(deployment)
            client.delete_work_pool(pool)


def heal_rows() -> list[dict[str, Any]]:
    from orch.monitoring.healing import list_runs

    return list_runs(get_settings())


def audit_actions() -> list[str]:
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import AuditRecord

    with session_scope(get_settings().database) as session:
        return list(session.scalars(select(AuditRecord.action).order_by(AuditRecord.id)))


def test_sweep_measures_and_fires_for_a_killed_target(prefect_server: str, isolated_env: Path, service: Service,
                                                     slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.monitor_sweep import monitor_sweep
    from orch.monitoring.alerts import list_alerts
    from orch.monitoring.samples import latest

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"url": service.url},
                                                 "restart": {"command": service.start_command}},
              enabled=False)
    first = monitor_sweep()
    assert first["notices"] == [] and first["samples"] > 10
    values, host = latest(get_settings()), get_settings().monitoring.host_name
    assert values[("target_up", "web")] == 1.0 and ("disk_usage_percent", f"{host}:/") in values
    assert ("cpu_percent", host) in values and values[("host_sweep", host)] == 1.0
    assert values[("database_up", "host")] == 1.0 and values[("prefect_up", "host")] == 1.0
    assert ("queue_depth", "critical") in values and ("prefect_lag_seconds", "host") in values

    service.kill()
    second = monitor_sweep()
    assert second["notices"] == ["firing:target_down@web"]
    (alert,) = [a for a in list_alerts(get_settings()) if a["alert_name"] == "target_down"]
    assert (alert["state"], alert["value"], alert["threshold"]) == ("firing", 0.0, 1.0)
    (message,) = slack.json_bodies()  # healing is off, so the sweep says it, once, with the reason
    assert "target_down FIRING on web" in message["text"] and "Self-healing is turned off" in message["text"]
    assert "/runs/flow-run/" in message["text"]
    assert monitor_sweep()["notices"] == [] and len(slack.requests) == 1  # de-duplicated


def test_sweeps_are_off_with_enable_monitoring_false(prefect_server: str, isolated_env: Path,
                                                    monkeypatch: pytest.MonkeyPatch, slack: HttpReceiver) -> None:
    from flows.monitor_sweep import monitor_sweep

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["false"]}})
    monkeypatch.setenv("ORCH_FEATURES__ENABLE_MONITORING", "false")
    reset_settings_cache()
    assert monitor_sweep() == {"skipped": "features.enable_monitoring is false"}


def test_restart_heals_a_killed_service_and_says_so_once(prefect_server: str, isolated_env: Path, service: Service,
                                                        slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"url": service.url},
                                                 "restart": {"command": service.start_command}},
              settle_seconds=60)  # how long the restarted server may take to answer: a deadline, not a pause
    service.kill()
    result = self_heal(target="web", summary="target_up 0 < 1 on web for 0 s")
    assert result["outcome"] == "healed" and result["action"] == "restart" and service.healthy()
    (message,) = slack.json_bodies()
    text = message["text"]
    assert "web healed after target_down" in text and "Fired: target_down on web: target_up 0 < 1" in text
    assert "- restart #1: ok - ran /bin/sh" in text and "- health_check: ok" in text and "/runs/flow-run/" in text
    (run,) = heal_rows()
    assert run["outcome"] == "healed" and [s["step"] for s in run["steps"]] == ["restart", "health_check"]
    assert audit_actions() == ["heal.start", "heal.restart", "heal.health_check", "heal.finish"]


def test_escalates_from_restart_to_isolate_to_rollback(prefect_server: str, isolated_env: Path, tmp_path: Path,
                                                       slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.request import validate
    from orch.storage.engine import session_scope
    from orch.storage.models import CoreReservation

    flag = tmp_path / "rolled-back"
    configure(isolated_env, monkeypatch, slack, {
        "name": "web", "health_check": {"command": ["test", "-e", str(flag)]},
        "restart": {"command": ["true"]},  # restarting does not fix it
        "isolate": {"core": "WORK_AI_09"}, "rollback": {"command": ["touch", str(flag)]}},
        settle_seconds=0.5)  # the command check answers at once; no need to wait for a restart to settle
    result = self_heal(target="web")
    assert result["outcome"] == "healed" and result["action"] == "rollback"
    steps = [(s["step"], s.get("ok")) for s in result["steps"]]
    assert steps == [("restart", True), ("health_check", False), ("restart", True), ("health_check", False),
                     ("escalate", False), ("isolate", True), ("health_check", False), ("isolate", True),
                     ("health_check", False), ("escalate", False), ("rollback", True), ("health_check", True)]
    with session_scope(get_settings().database) as session:
        assert session.get(CoreReservation, "WORK_AI_09").owner == "isolated:web"
    queue = TaskQueue(get_settings())
    queue.enqueue(validate({"core_id": "WORK_AI_09", "action": "noop"}, get_settings()), "someone")
    queue.enqueue(validate({"core_id": "WORK_AI_01", "action": "noop"}, get_settings()), "someone")
    assert [claim.core_id for claim in queue.claim("test", 10)] == ["WORK_AI_01"]  # nothing goes to WORK_AI_09


def test_all_actions_exhausted_pages_a_human(prefect_server: str, isolated_env: Path, slack: HttpReceiver,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["false"]},
                                                 "restart": {"command": ["false"]},
                                                 "rollback": {"deployment": "web-release/missing"}}, max_retries=1)
    result = self_heal(target="web")
    assert result["outcome"] == "failed"
    assert [(s["step"], s["ok"]) for s in result["steps"]] == [("restart", False), ("escalate", False),
                                                              ("rollback", False), ("escalate", False)]
    (message,) = slack.json_bodies()
    assert message["text"].startswith("<!channel> *[critical] web NOT healed after target_down: a human must act*")
    assert "- restart #1: failed - false exited 1" in message["text"]
    assert "- rollback #1: failed - deployment web-release/missing: ObjectNotFound" in message["text"]


def test_circuit_breaker_stops_healing_and_says_why(prefect_server: str, isolated_env: Path, tmp_path: Path,
                                                    slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal

    restarted = tmp_path / "restarts"
    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["true"]},
                                                 "restart": {"command": ["sh", "-c", f"echo x >> {restarted}"]}},
              max_runs_per_hour=2)
    assert [self_heal(target="web")["outcome"] for _ in range(3)] == ["healed", "healed", "circuit_open"]
    assert restarted.read_text() == "x\nx\n"
    last = slack.json_bodies()[-1]["text"]
    assert "healing circuit open" in last and "2 healing runs on web in the last hour (limit 2)" in last
    assert [r["outcome"] for r in heal_rows()] == ["circuit_open", "healed", "healed"]


def test_dry_run_logs_the_plan_and_changes_nothing(prefect_server: str, isolated_env: Path, tmp_path: Path,
                                                   slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal

    touched = tmp_path / "restarted"
    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["false"]},
                                                 "restart": {"command": ["touch", str(touched)]},
                                                 "isolate": {"core": "WORK_AI_01"}}, dry_run=True)
    result = self_heal(target="web")
    assert result["outcome"] == "dry_run" and result["plan"] == ["restart", "isolate"]
    assert "would try restart, isolate, each up to 2 times" in result["reason"]
    assert not touched.exists() and slack.requests == []
    assert [r["outcome"] for r in heal_rows()] == ["dry_run"] and audit_actions() == ["heal.dry_run"]


def test_approval_timeout_means_no(prefect_server: str, isolated_env: Path, tmp_path: Path, slack: HttpReceiver,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.self_heal import self_heal

    isolated = tmp_path / "isolated"
    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["false"]},
                                                 "isolate": {"command": ["touch", str(isolated)]}},
              require_approval=["isolate"], approval_timeout=2)
    state = self_heal(target="web", return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["outcome"] == "failed" and not isolated.exists()
    asked, answer = result["steps"][:2]
    assert (asked["step"], asked["state"], asked["action"]) == ("approval", "asked", "isolate")
    assert answer == {"step": "approval", "action": "isolate", "ok": False,
                      "detail": "no approval within 2 s (timeout means no)"}


def test_maintenance_mode_silences_and_switches_stop_healing(prefect_server: str, isolated_env: Path, tmp_path: Path,
                                                             slack: HttpReceiver,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from flows.self_heal import self_heal
    from orch.monitoring import silences

    touched = tmp_path / "restarted"
    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["false"]},
                                                 "restart": {"command": ["touch", str(touched)]}})
    window = silences.create(get_settings(), kind="maintenance", target="web", duration=timedelta(hours=1),
                             actor="cli:test")
    assert self_heal(target="web")["outcome"] == "skipped"
    silences.end(get_settings(), window["id"], "cli:test")
    monkeypatch.setenv("MAINTENANCE_MODE", "true")
    reset_settings_cache()
    result = self_heal(target="web")
    assert result == {"outcome": "skipped", "reason": "maintenance mode is on: self-healing is paused", "steps": []}
    monkeypatch.delenv("MAINTENANCE_MODE")
    monkeypatch.setenv("ORCH_FEATURES__ENABLE_SELF_HEALING", "false")
    reset_settings_cache()
    assert self_heal(target="web")["outcome"] == "skipped"
    assert not touched.exists()
    texts = [body["text"] for body in slack.json_bodies()]
    assert "maintenance 1 covers web" in texts[0] and "MAINTENANCE MODE is on" in texts[1]


@pytest.mark.slow
def test_an_approved_destructive_action_runs(prefect_server: str, isolated_env: Path, tmp_path: Path,
                                            slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.self_heal import self_heal

    isolated = tmp_path / "isolated"
    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["test", "-e",
                                                                                            str(isolated)]},
                                                 "isolate": {"command": ["touch", str(isolated)]}},
              require_approval=["isolate"], approval_timeout=120)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(self_heal(target="web")))
    runner.start()
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    with get_client(sync_client=True) as client:
        runs = wait_until(lambda: [r for r in client.read_flow_runs(flow_run_filter=paused)
                                   if r.name == "self-heal web"], 90, "the run to pause for approval", interval=0.5)
    resume_flow_run(runs[0].id, run_input={"approve": True, "comment": "go ahead"})
    runner.join(90)
    assert not runner.is_alive(), "the approved run did not finish"
    assert outcome["outcome"] == "healed" and isolated.exists()
    assert outcome["steps"][0]["state"] == "asked"
    assert outcome["steps"][1] == {"step": "approval", "action": "isolate", "ok": True, "detail": "approved: go ahead"}


def test_a_target_killed_after_each_heal_is_healed_again_until_the_breaker(
        prefect_server: str, isolated_env: Path, service: Service, slack: HttpReceiver,
        monkeypatch: pytest.MonkeyPatch, heal_deployment: Any) -> None:
    """Issue 15: killed, healed, killed again while its alert still fires (no sweep saw it well between):
    the sweep asks for a second heal, and the third is refused by the circuit breaker (2 an hour). Each ask
    is one self-heal run, on this host's queue (the target lives here); the test runs each heal itself."""
    from flows.monitor_sweep import monitor_sweep
    from flows.self_heal import self_heal

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"url": service.url},
                                                 "restart": {"command": service.start_command}},
              settle_seconds=60, max_runs_per_hour=2)
    assert monitor_sweep()["notices"] == []
    outcomes = []
    for _ in range(3):
        service.kill()
        swept = monitor_sweep()
        assert swept["notices"] == ["firing:target_down@web"], swept  # what the sweep runs self-heal for
        outcomes.append(self_heal(target="web")["outcome"])
    assert outcomes == ["healed", "healed", "circuit_open"]
    requested = heal_deployment()
    assert len(requested) == 3 and {r.parameters["target"] for r in requested} == {"web"}
    assert {r.work_queue_name for r in requested} == {f"host-{get_settings().monitoring.host_name}"}
    titles = [body["text"].splitlines()[0] for body in slack.json_bodies()]
    assert any("web healed after target_down" in t and "(heal" not in t for t in titles), titles
    assert any("web healed after target_down (heal 2 since it fired)" in t for t in titles), titles
    assert any("healing circuit open" in t for t in titles), titles
    assert monitor_sweep()["notices"] == []  # the breaker stopped it: a human was paged, no fourth run asked


def test_prefect_lag_counts_only_orchs_own_late_runs(prefect_server: str, isolated_env: Path,
                                                    monkeypatch: pytest.MonkeyPatch, slack: HttpReceiver) -> None:
    """A late run of someone else's deployment on a shared Prefect server (no worker of its own) is not ORCH's
    engine stalling; an ORCH run (tag ``orch``) late by ten minutes is."""
    from datetime import UTC, datetime, timedelta

    from support import prefect_auth

    from orch.monitoring.samples import collect_prefect

    configure(isolated_env, monkeypatch, slack, {"name": "web", "health_check": {"command": ["true"]}})
    late = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    auth = prefect_auth()
    flow_id = httpx.post(f"{prefect_server}/flows/", json={"name": "someone-elses-flow"}, headers=auth).json()["id"]

    def scheduled_run(tags: list[str]) -> str:
        created = httpx.post(f"{prefect_server}/flow_runs/", headers=auth, json={
            "flow_id": flow_id, "tags": tags,
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": late}}})
        assert created.status_code in (200, 201), created.text
        return str(created.json()["id"])

    def lag() -> float:
        (value,) = [s.value for s in collect_prefect(get_settings()) if s.metric == "prefect_lag_seconds"]
        return value

    runs = [scheduled_run(["other-team"])]
    try:
        assert lag() < 60
        runs.append(scheduled_run(["orch"]))
        assert lag() >= 600
    finally:
        for run in runs:
            httpx.delete(f"{prefect_server}/flow_runs/{run}", headers=auth)
