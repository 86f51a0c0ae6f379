"""Authorisation by what a request does (issue 14, item 1), against the real API on SQLite and PostgreSQL.

Starting ``restore`` needs an admin by every path: ``POST /deployments/.../runs``, a ``run-deployment``
task (checked against its owner when dispatched, and again when it runs), and the CLI (the local
administrator). Flow parameters that name files stay inside the directories the configuration names.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from api_fixtures import PASSWORD, Api

from deployments.apply import deployment_names
from orch.config.runtime import get_settings, reset_settings_cache
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.security.flow_access import FLOW_PERMISSIONS, permission_to_start
from orch.security.rbac import Permission

RESTORE = {"core_id": "WORK_AI_01", "action": "run-deployment", "params": {"name": "restore/manual"}}


def refusals(api: Api, action: str) -> list[dict[str, Any]]:
    page = api.client.get("/audit", params={"action": action, "success": "false"}, headers=api.headers("admin"))
    assert page.status_code == 200, page.text
    return page.json()["entries"]


def task_count(api: Api) -> int:
    return len(api.client.get("/tasks", headers=api.headers("admin")).json()["tasks"])


def test_every_orch_flow_has_its_permission_in_the_one_table() -> None:
    """The table in orch/security names exactly the flows of prefect.yaml, so a new flow cannot slip in
    with no decision."""
    flows = {name.partition("/")[0] for name in deployment_names()}
    assert flows == set(FLOW_PERMISSIONS)
    admin_only = {f for f in flows if permission_to_start(f) is Permission.SYSTEM_ADMIN}
    assert admin_only == {"restore", "emergency-recovery", "service-recovery", "self-heal", "db-maintenance"}
    assert permission_to_start("someone-elses-flow") is Permission.SYSTEM_ADMIN


def test_operator_cannot_dispatch_an_admin_flow_and_the_refusal_is_audited(api_factory: Any,
                                                                          database_url: str) -> None:
    api = api_factory(database_url)
    operator = api.headers("operator")
    refused = api.client.post("/dispatch", json=RESTORE, headers=operator)
    assert refused.status_code == 403, refused.text
    assert refused.json()["detail"] == ("starting restore/manual needs permission 'system:admin'; "
                                        "oscar (role operator) lacks it")
    for name in ("emergency-recovery/manual", "service-recovery/manual", "self-heal/auto",
                 "db-maintenance/weekly", "not-orch/anything"):
        body = {**RESTORE, "params": {"name": name}}
        assert api.client.post("/dispatch", json=body, headers=operator).status_code == 403, name
    batch = api.client.post("/dispatch/batch", json={"tasks": [{"core_id": "WORK_AI_01", "action": "noop"},
                                                               RESTORE]}, headers=operator)
    assert batch.status_code == 403 and batch.json()["detail"].startswith("tasks.1: starting restore/manual")
    assert task_count(api) == 0  # nothing was queued, not even the batch's harmless task

    [*_, first] = refusals(api, "task.create")  # newest first
    assert (first["username"], first["resource"], first["success"]) == ("oscar", "task", False)
    assert first["details"] == {"needs": "system:admin", "role": "operator", "effect": "starting restore/manual",
                                "action": "run-deployment", "core_id": "WORK_AI_01"}
    assert len(refusals(api, "task.create")) == 7

    allowed = {**RESTORE, "params": {"name": "db-health/hourly"}}
    assert api.client.post("/dispatch", json=allowed, headers=operator).status_code == 202
    admin = api.client.post("/dispatch", json=RESTORE, headers=api.headers("admin"))
    assert admin.status_code == 202, admin.text
    assert task_count(api) == 2


def test_route_refuses_an_operator_with_the_same_rule_and_audits_it(api: Api) -> None:
    refused = api.client.post("/deployments/restore/manual/runs", json={"parameters": {}},
                              headers=api.headers("operator"))
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("starting restore/manual needs permission 'system:admin'")
    [entry] = refusals(api, "deployment.run")
    assert (entry["username"], entry["resource_id"], entry["details"]["needs"]) == (
        "oscar", "restore/manual", "system:admin")


def test_route_refuses_file_parameters_outside_their_directories_before_prefect(api: Api, tmp_path: Path) -> None:
    """422 from the API itself: the settings point at a Prefect server that is not running, so an answer
    from further on would be 503."""
    outside = tmp_path / "secret.log"
    outside.write_text("TOP-SECRET-LINE\n")
    for parameters in ({"log_paths": ["/etc/passwd"]}, {"audit_paths": [str(outside)]},
                       {"log_paths": [str(api.settings.data_dir) + "/logs/../../../secret.log"]}):
        bad = api.client.post("/deployments/ops-report/weekly/runs", json={"parameters": parameters},
                              headers=api.headers("operator"))
        assert bad.status_code == 422, bad.text
        assert "outside the configured log directories" in bad.json()["detail"]
    for backup in ("/etc/passwd", "../x", str(outside)):
        bad = api.client.post("/deployments/restore/manual/runs", json={"parameters": {"backup": backup}},
                              headers=api.headers("admin"))
        assert bad.status_code == 422, bad.text
        detail = bad.json()["detail"]
        assert "outside the backup directory" in detail and "TOP-SECRET" not in detail and "root:" not in detail


async def _flow_runs_tagged(tag: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async with get_client() as prefect:
        return await prefect.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def test_a_demoted_or_disabled_owner_s_task_fails_at_run_time_without_starting_the_flow(
        api_factory: Any, database_url: str, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.dispatch import dispatch

    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_settings_cache()
    api = api_factory(database_url)
    admin = api.headers("admin")
    tokens = {}
    for name in ("bob", "carol"):
        made = api.client.post("/users", json={"username": name, "password": PASSWORD, "role": "admin"}, headers=admin)
        assert made.status_code == 201, made.text
        tokens[name] = {"Authorization": f"Bearer {api.login(name).json()['access_token']}"}
    queued = {}
    for name in ("bob", "carol"):
        accepted = api.client.post("/dispatch", json={**RESTORE, "max_retries": 2}, headers=tokens[name])
        assert accepted.status_code == 202, accepted.text
        queued[name] = accepted.json()["task_id"]
    # An admin whose role stays, and the CLI (the local administrator): past the check, into Prefect, which
    # knows no such deployment. The name is unique, so nothing real can start.
    missing = f"restore/not-registered-{uuid4().hex[:8]}"
    alice = api.client.post("/dispatch", json={**RESTORE, "params": {"name": missing}, "max_retries": 0},
                            headers=admin).json()["task_id"]
    queue = TaskQueue(get_settings())
    cli, _ = queue.enqueue(validate({**RESTORE, "params": {"name": missing}, "max_retries": 0}, queue.settings),
                           "cli:root")

    assert api.client.patch("/users/bob", json={"role": "operator"}, headers=admin).status_code == 200
    assert api.client.patch("/users/carol", json={"is_active": False}, headers=admin).status_code == 200

    summary = dispatch(run_for_seconds=0, concurrency=4)
    assert summary["finished"] == 4
    bob, carol = queue.get(queued["bob"]), queue.get(queued["carol"])
    assert (bob["status"], bob["attempts"], bob["error"]) == (
        "failed", 1, "not run: starting restore/manual needs permission 'system:admin'; bob (role operator) lacks it")
    assert (carol["status"], carol["attempts"], carol["error"]) == (
        "failed", 1, "not run: starting restore/manual needs permission 'system:admin'; carol is disabled or "
                     "no longer exists")
    assert [e["event_type"] for e in queue.events(queued["bob"])] == ["task.created", "task.started", "task.failed"]
    for task_id in queued.values():  # no flow run was ever created for the refused tasks
        assert asyncio.run(_flow_runs_tagged(f"orch-task:{task_id}")) == []
    for task_id in (alice, cli["task_id"]):
        passed = queue.get(task_id)
        assert passed["status"] == "failed" and not passed["error"].startswith("not run:"), passed["error"]
        assert missing in passed["error"] or "ObjectNotFound" in passed["error"], passed["error"]
