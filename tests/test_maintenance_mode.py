"""Maintenance mode as a run-time switch in the database: turned on and off through the API or the CLI,
seen by every replica on the same database within the cache period, forced on by the environment, audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from api_fixtures import Api, api_for
from sqlalchemy import select
from support import run_orch

from orch import maintenance_mode
from orch.storage.engine import session_scope
from orch.storage.models import AuditRecord

DISPATCH = {"core_id": "WORK_AI_01", "action": "noop"}


class Clock:
    """A monotonic clock the test moves by hand: the cache ages without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clock(api: Api, clock: Clock) -> None:
    api.client.app.state.maintenance_switch = maintenance_mode.Switch(api.settings, clock=clock)  # type: ignore[attr-defined]


def audits(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    with session_scope(api.settings.database) as session:
        rows = session.scalars(select(AuditRecord).where(AuditRecord.resource == "maintenance_mode")
                               .order_by(AuditRecord.id))
        return [(row.actor, row.action, row.details) for row in rows]


def test_switched_on_and_off_through_the_api_and_seen_by_another_replica(api_factory: Any,
                                                                         database_url: str) -> None:
    api = api_factory(database_url)
    admin, operator = api.headers("admin"), api.headers("operator")
    assert api.client.get("/maintenance-mode", headers=api.headers("viewer")).json() == {
        "on": False, "since": None, "by": None, "reason": "", "forced_by_env": False}
    with api_for(api.settings) as replica:  # a second app on the same database: another replica
        clock = Clock()
        with_clock(replica, clock)
        assert replica.client.post("/dispatch", json=DISPATCH, headers=operator).status_code == 202  # reads: off

        turned = api.client.put("/maintenance-mode", json={"on": True, "reason": "moving the disk"}, headers=admin)
        assert turned.status_code == 200, turned.text
        assert turned.json()["on"] is True and turned.json()["by"] == "alice"
        assert turned.json()["reason"] == "moving the disk" and turned.json()["since"]

        refused = api.client.post("/dispatch", json=DISPATCH, headers=operator)  # this replica: at once
        assert refused.status_code == 503 and refused.headers["retry-after"] == "300"
        assert "turned on by alice" in refused.json()["detail"] and "moving the disk" in refused.json()["detail"]
        assert "MAINTENANCE_MODE=true" not in refused.json()["detail"]
        assert api.client.get("/tasks", headers=api.headers("viewer")).status_code == 200
        assert api.client.get("/health").status_code == 200 and api.login("vera").status_code == 200

        clock.now += 0.5  # the other replica's copy is still fresh: it has not read the change yet
        assert replica.client.post("/dispatch", json=DISPATCH, headers=operator).status_code == 202
        clock.now += 0.5  # one second after its read: it reads the switch again
        late = replica.client.post("/dispatch", json=DISPATCH, headers=operator)
        assert late.status_code == 503 and "moving the disk" in late.json()["detail"]
        assert replica.client.get("/maintenance-mode", headers=operator).json()["by"] == "alice"

        ended = replica.client.put("/maintenance-mode", json={"on": False, "reason": "disk moved"}, headers=admin)
        assert ended.status_code == 200 and ended.json()["on"] is False  # PUT works while it is on
        assert replica.client.post("/dispatch", json=DISPATCH, headers=operator).status_code == 202
    assert audits(api) == [("alice", "maintenance_mode.on", {"reason": "moving the disk", "was": "off"}),
                           ("alice", "maintenance_mode.off", {"reason": "disk moved", "was": "on"})]


def test_only_admins_switch_it_and_bad_bodies_are_422(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    for role in ("viewer", "operator", "system"):
        answer = api.client.put("/maintenance-mode", json={"on": True, "reason": "x"}, headers=api.headers(role))
        assert answer.status_code == 403, role
    assert api.client.put("/maintenance-mode", json={"on": True}).status_code == 401
    assert api.client.get("/maintenance-mode").status_code == 401
    admin = api.headers("admin")
    for body in ({"on": "maybe"}, {"reason": "no on"}, {"on": True, "reason": "x" * 501}, {"on": True, "extra": 1}):
        assert api.client.put("/maintenance-mode", json=body, headers=admin).status_code == 422, body
    assert api.client.get("/maintenance-mode", headers=admin).json()["on"] is False
    assert audits(api) == []


def test_the_environment_forces_it_on(api_factory: Any) -> None:
    api = api_factory(MAINTENANCE_MODE="true")
    admin = api.headers("admin")
    assert api.client.get("/maintenance-mode", headers=admin).json() == {
        "on": True, "since": None, "by": "MAINTENANCE_MODE", "reason": maintenance_mode.ENV_REASON,
        "forced_by_env": True}
    refused = api.client.post("/dispatch", json=DISPATCH, headers=api.headers("operator"))
    assert refused.status_code == 503 and "MAINTENANCE_MODE=true" in refused.json()["detail"]
    off = api.client.put("/maintenance-mode", json={"on": False, "reason": "try"}, headers=admin)
    assert off.status_code == 409 and "restart it without that setting" in off.json()["detail"]
    on = api.client.put("/maintenance-mode", json={"on": True, "reason": "for the others too"}, headers=admin)
    assert on.status_code == 200 and on.json()["by"] == "alice" and on.json()["forced_by_env"] is True
    assert audits(api) == [("alice", "maintenance_mode.on", {"reason": "for the others too", "was": "off"})]


def test_healing_and_notifications_follow_the_switch(api_factory: Any, database_url: str) -> None:
    from orch.monitoring.alerts import healing_stopped_by

    api = api_factory(database_url)
    assert healing_stopped_by(api.settings) is None
    maintenance_mode.set_mode(api.settings, True, "cli:test", "upgrade")
    assert maintenance_mode.is_on(api.settings)
    assert healing_stopped_by(api.settings) == "maintenance mode is on: self-healing is paused"
    maintenance_mode.set_mode(api.settings, False, "cli:test")
    assert healing_stopped_by(api.settings) is None


def test_command_line_on_off_and_status(api_factory: Any, database_url: str, isolated_env: Path) -> None:
    api = api_factory(database_url)
    env = {"DATABASE_URL": database_url}
    assert run_orch("maintenance", "mode", env=env).stdout.strip() == "maintenance mode is off"
    on = run_orch("maintenance", "mode", "on", "--reason", "kernel update", env=env)
    assert on.returncode == 0, on.stderr
    assert on.stdout.startswith("maintenance mode is on: turned on by cli:") and "kernel update" in on.stdout
    status = json.loads(run_orch("maintenance", "mode", "--json", env=env).stdout)
    assert status["on"] is True and status["reason"] == "kernel update" and status["by"].startswith("cli:")
    refused = api.client.post("/dispatch", json=DISPATCH, headers=api.headers("operator"))
    assert refused.status_code == 503 and "kernel update" in refused.json()["detail"]  # this app had not read it

    forced = run_orch("maintenance", "mode", "off", env={**env, "MAINTENANCE_MODE": "true"})
    assert forced.returncode == 1 and forced.stderr.startswith("error: maintenance mode is forced on by")
    bad = run_orch("maintenance", "mode", "maybe", env=env)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: expected on or off, got 'maybe'"
    off = run_orch("maintenance", "mode", "off", env=env)
    assert off.returncode == 0 and off.stdout.startswith("maintenance mode is off (turned off by cli:")
    assert [action for _actor, action, _details in audits(api)] == ["maintenance_mode.on", "maintenance_mode.off"]
    assert all(actor.startswith("cli:") for actor, _action, _details in audits(api))
