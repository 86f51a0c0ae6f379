"""The API's routes doing their jobs: dispatch, tasks, cores, locks, users, audit, deployments, and the
cross-cutting rules (maintenance mode, body limit, CORS, trusted hosts, GZip, docs switch)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
from api_fixtures import PASSWORD, Api
from support import prefect_auth

from orch.dispatch.locks import LockManager


def test_dispatch_and_manage_tasks(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    client, operator = api.client, api.headers("operator")
    accepted = client.post("/dispatch", json={"coreId": "core-a", "action": "noop", "priority": "high",
                                              "idempotency_key": "k-1", "metadata": {"source": "test"}},
                           headers=operator)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "queued" and body["core_id"] == "core-a" and body["priority"] == "high"
    assert body["created_at"] and body["estimated_start"] and body["created"] is True
    again = client.post("/dispatch", json={"coreId": "core-a", "action": "noop", "idempotency_key": "k-1"},
                        headers=operator).json()
    assert again["task_id"] == body["task_id"] and again["created"] is False

    invalid = client.post("/dispatch", json={"core_id": "core a", "action": "warp", "priority": "urgent"},
                          headers=operator)
    assert invalid.status_code == 422 and len(invalid.json()["errors"]) >= 2, invalid.json()

    batch = client.post("/dispatch/batch", json={"tasks": [{"core_id": "core-b", "action": "noop"}] * 3},
                        headers=operator)
    assert batch.status_code == 202 and len(batch.json()["tasks"]) == 3
    bad_batch = client.post("/dispatch/batch", json={"tasks": [{"core_id": "core-b", "action": "noop"},
                                                               {"core_id": "core-b", "action": "nope"}]},
                            headers=operator)
    assert bad_batch.status_code == 422 and bad_batch.json()["errors"][0].startswith("tasks.1.")
    listed = client.get("/tasks", params={"core_id": "core-b", "limit": 2}, headers=api.headers("viewer")).json()
    assert len(listed["tasks"]) == 2 and all(t["core_id"] == "core-b" for t in listed["tasks"])
    assert client.get("/tasks", params={"status": "exploded"}, headers=operator).status_code == 422

    task_id = body["task_id"]
    cancelled = client.post(f"/tasks/{task_id}/cancel", headers=operator)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/tasks/{task_id}/cancel", headers=operator).status_code == 409
    assert client.post(f"/tasks/{task_id}/retry", headers=operator).status_code == 409
    assert client.get("/tasks/does-not-exist", headers=operator).status_code == 404
    events = client.get(f"/jobs/{task_id}/events", headers=api.headers("viewer")).json()["events"]
    assert [e["event_type"] for e in events] == ["task.created", "task.cancelled"]
    audit = client.get("/audit", params={"action": "task.create"}, headers=api.headers("admin")).json()["entries"]
    assert {e["username"] for e in audit} == {"oscar"} and audit[0]["ip_address"] == "testclient"


def test_queue_full_is_429_with_retry_after(api_factory: Any) -> None:
    api = api_factory(ORCH_DISPATCH__MAX_QUEUE_DEPTH="1")
    headers = api.headers("operator")
    assert api.client.post("/dispatch", json={"core_id": "c", "action": "noop"}, headers=headers).status_code == 202
    full = api.client.post("/dispatch", json={"core_id": "c", "action": "noop"}, headers=headers)
    assert full.status_code == 429 and full.headers["retry-after"] == "5"


def test_external_core_claims_reports_and_only_for_itself(api: Api) -> None:
    client, core = api.client, api.headers("system")
    task_id = client.post("/dispatch", json={"core_id": "core-a", "action": "external"},
                          headers=api.headers("operator")).json()["task_id"]
    other = client.post("/dispatch", json={"core_id": "core-b", "action": "external"},
                        headers=api.headers("operator")).json()["task_id"]
    assert client.post("/cores/core-b/claim", headers=core).status_code == 403
    assert client.get(f"/tasks/{other}", headers=core).status_code == 404  # another core's task is invisible
    assert client.put(f"/jobs/{task_id}/status", json={"status": "completed"}, headers=core).status_code == 409
    claimed = client.post("/cores/core-a/claim", headers=core).json()["tasks"]
    assert [t["task_id"] for t in claimed] == [task_id]
    assert client.put(f"/jobs/{task_id}/status", json={"status": "running", "attempt": 1},
                      headers=core).json()["status"] == "running"
    assert client.put(f"/jobs/{task_id}/status", json={"status": "completed", "attempt": 2},
                      headers=core).status_code == 409  # not the current attempt
    done = client.put(f"/jobs/{task_id}/status", json={"status": "completed", "attempt": 1, "result": [1, 2]},
                      headers=core)
    assert done.status_code == 200 and done.json()["status"] == "completed" and done.json()["result"] == [1, 2]
    assert client.put(f"/jobs/{task_id}/status", json={"status": "failed"}, headers=core).status_code == 409
    assert [t["core_id"] for t in client.get("/tasks", headers=core).json()["tasks"]] == ["core-a"]


def test_locks_listed_and_force_released_by_admin(api: Api) -> None:
    LockManager(api.settings).acquire("db:orders", "backup-flow", ttl=60)
    listed = api.client.get("/locks", headers=api.headers("viewer")).json()["locks"]
    assert [(lock["resource"], lock["held"]["owner"]) for lock in listed] == [("db:orders", "backup-flow")]
    assert api.client.delete("/locks/db:orders", headers=api.headers("operator")).status_code == 403
    assert api.client.delete("/locks/db:orders", headers=api.headers("admin")).json()["released"] is True
    assert api.client.delete("/locks/db:orders", headers=api.headers("admin")).status_code == 404
    entry = api.client.get("/audit", params={"action": "lock.release"}, headers=api.headers("admin")).json()
    assert entry["entries"][0]["details"] == {"holder": "backup-flow"}


def test_users_created_updated_and_policy_enforced(api: Api) -> None:
    admin = api.headers("admin")
    weak = api.client.post("/users", json={"username": "newbie", "password": "short", "role": "viewer"}, headers=admin)
    assert weak.status_code == 422 and "at least 12 characters" in weak.json()["detail"]
    assert api.client.post("/users", json={"username": "newbie", "password": PASSWORD, "role": "root"},
                           headers=admin).status_code == 422
    created = api.client.post("/users", json={"username": "newbie", "password": PASSWORD, "role": "viewer"},
                              headers=admin)
    assert created.status_code == 201 and created.json()["role"] == "viewer"
    assert api.client.post("/users", json={"username": "newbie", "password": PASSWORD, "role": "viewer"},
                           headers=admin).status_code == 409
    assert api.client.patch("/users/newbie", json={"role": "operator"}, headers=admin).json()["role"] == "operator"
    assert api.client.patch("/users/ghost", json={}, headers=admin).status_code == 404
    assert api.client.patch("/users/alice", json={"role": "viewer"}, headers=admin).status_code == 422
    names = [u["username"] for u in api.client.get("/users", headers=admin).json()["users"]]
    assert "newbie" in names and "password_hash" not in json.dumps(api.client.get("/users", headers=admin).json())


def test_maintenance_mode_refuses_changes_but_serves_reads(api_factory: Any) -> None:
    api = api_factory(MAINTENANCE_MODE="true")
    refused = api.client.post("/dispatch", json={"core_id": "c", "action": "noop"}, headers=api.headers("operator"))
    assert refused.status_code == 503 and refused.headers["retry-after"] == "300"
    assert "maintenance mode" in refused.json()["detail"]
    assert api.client.get("/tasks", headers=api.headers("viewer")).status_code == 200
    assert api.client.get("/healthz").status_code == 200 and api.client.get("/health").status_code == 200
    assert api.login("alice").status_code == 200


def test_body_limit_cors_hosts_gzip_and_docs(api_factory: Any) -> None:
    api = api_factory(ORCH_API__MAX_BODY_BYTES="2KB")
    client, operator = api.client, api.headers("operator")
    big = {"core_id": "c", "action": "noop", "params": {"blob": "x" * 4096}}
    assert client.post("/dispatch", json=big, headers=operator).status_code == 413

    def chunks():  # no Content-Length: the limit still holds while streaming
        yield b'{"core_id": "c", "action": "noop", "params": {"blob": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}}'

    streamed = client.post("/dispatch", content=chunks(), headers={**operator, "Content-Type": "application/json"})
    assert streamed.status_code == 413

    preflight = client.options("/preview", headers={"Origin": "http://127.0.0.1:5001",
                                                    "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-max-age"] == "600" and "Origin" in preflight.headers["vary"]
    assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:5001"
    foreign = client.options("/preview", headers={"Origin": "http://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
    assert foreign.status_code == 400 and "access-control-allow-origin" not in foreign.headers

    assert client.get("/healthz", headers={"Host": "evil.example"}).status_code == 400

    for _ in range(20):
        client.post("/dispatch", json={"core_id": "c", "action": "noop", "metadata": {"source": "y" * 60}},
                    headers=operator)
    listed = client.get("/tasks", headers={**operator, "Accept-Encoding": "gzip"})
    assert listed.headers.get("content-encoding") == "gzip" and len(listed.json()["tasks"]) == 20
    assert client.get("/healthz", headers={"Accept-Encoding": "gzip"}).headers.get("content-encoding") is None
    assert client.get("/openapi.json").status_code == 200  # local default: docs on

    quiet = api_factory(ORCH_FEATURES__DOCS="false")
    assert quiet.client.get("/docs").status_code == 404 and quiet.client.get("/openapi.json").status_code == 404
    production = api_factory(ORCH_ENVIRONMENT="production")
    assert production.client.get("/openapi.json").status_code == 404  # production default: docs off


def test_health_detailed_needs_a_token(api: Api) -> None:
    assert api.client.get("/health", params={"detailed": "true"}).status_code == 401
    api.client.post("/dispatch", json={"core_id": "c", "action": "noop", "priority": "critical"},
                    headers=api.headers("operator"))
    details = api.client.get("/health", params={"detailed": "true"}, headers=api.headers("viewer")).json()["details"]
    assert details["queue_depth"]["critical"] == 1 and details["active_tasks"] == 0
    assert details["total_requests"] >= 2
    plain = api.client.get("/health").json()
    assert set(plain["components"]) == {"database", "prefect", "dispatcher", "monitor"} and "details" not in plain


def test_run_deployment_on_the_real_prefect_server(api_factory: Any, prefect_server: str) -> None:
    """Registers the db-health deployment on the test server, then starts it through the API."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.db_health import db_health

    async def register() -> None:
        async with get_client() as prefect:
            with contextlib.suppress(ObjectAlreadyExists):  # created by another test of this session
                await prefect.create_work_pool(WorkPoolCreate(name="orch-process", type="process"))
        deployment = await db_health.to_deployment(name="hourly", work_pool_name="orch-process")
        await deployment.apply()

    asyncio.run(register())
    api = api_factory(PREFECT_API_URL=prefect_server)
    client = api.client
    started = client.post("/deployments/db-health/hourly/runs", json={"parameters": {}},
                          headers=api.headers("operator"))
    assert started.status_code == 201, started.text
    run = started.json()
    try:
        assert run["deployment"] == "db-health/hourly" and run["state"] == "SCHEDULED"
        assert httpx.get(f"{prefect_server}/flow_runs/{run['flow_run_id']}",
                         headers=prefect_auth()).json()["deployment_id"]
    finally:  # no worker serves it here: left Scheduled, it would be a late run to every later sweep
        httpx.delete(f"{prefect_server}/flow_runs/{run['flow_run_id']}", headers=prefect_auth())
    bad = client.post("/deployments/db-health/hourly/runs", json={"parameters": {"nope": 1}},
                      headers=api.headers("operator"))
    assert bad.status_code == 422 and "parameters" in bad.json()["detail"]
    assert client.post("/deployments/nope/hourly/runs", headers=api.headers("operator")).status_code == 404
    entries = client.get("/audit", params={"action": "deployment.run"}, headers=api.headers("admin")).json()["entries"]
    assert entries[0]["resource_id"] == "db-health/hourly"


def test_estimated_start_follows_the_work_ahead(api: Api) -> None:
    """One slot per core and no history: each task queued behind another starts one default duration later;
    a critical task jumps the queue, and the estimate says so."""
    from datetime import datetime

    def wait_of(body: dict[str, Any]) -> float:
        accepted = api.client.post("/dispatch", json=body, headers=api.headers("operator")).json()
        return (datetime.fromisoformat(accepted["estimated_start"])
                - datetime.fromisoformat(accepted["created_at"])).total_seconds()

    waits = [wait_of({"core_id": "core-estimate", "action": "noop", "priority": "low"}) for _ in range(3)]
    assert [round(w) for w in waits] == [0, 1, 2], waits
    assert round(wait_of({"core_id": "core-estimate", "action": "noop", "priority": "critical"})) == 0


def test_ids_beyond_the_database_range_are_422_not_500(api: Api) -> None:
    """Found by the schemathesis run: an id above 2**63 - 1 crashed SQLite's driver before it was bounded."""
    admin = api.headers("admin")
    assert api.client.get("/alerts/events", params={"after": 2**63}, headers=admin).status_code == 422
    assert api.client.delete(f"/silences/{2**63}", headers=admin).status_code == 422
    assert api.client.get("/alerts/events", params={"after": 2**63 - 1}, headers=admin).json() == {"items": []}


def test_no_dependency_is_handed_to_a_thread(api: Api) -> None:
    """FastAPI runs a plain ``def`` dependency in its thread pool: a hand-off to a thread and back on every
    request that uses it. Every dependency the routes use is ``async`` (or a class whose call is)."""
    import inspect

    from fastapi.routing import APIRoute

    def calls(dependant: Any) -> Iterator[Any]:
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:
            if isinstance(route, APIRoute):
                yield route
            elif (included := getattr(route, "original_router", None)) is not None:  # include_router's wrapper
                yield from api_routes(included.routes)

    threaded, checked = set(), 0
    for route in api_routes(api.client.app.routes):
        checked += 1
        for call in calls(route.dependant):
            target = call if inspect.isfunction(call) else type(call).__call__
            if not inspect.iscoroutinefunction(target):
                threaded.add(f"{route.path}: {getattr(call, '__qualname__', call)}")
    assert checked > 50 and not threaded, (checked, sorted(threaded))
