"""``GET /cores`` and a core's reservations (``isolate`` / ``release``) through the API, on both databases."""

from __future__ import annotations

from typing import Any

from api_fixtures import Api
from sqlalchemy import select

from orch.config.schema import CoreSettings, Settings
from orch.dispatch.queue import TaskQueue
from orch.storage.engine import session_scope
from orch.storage.models import AuditRecord


def _declare(settings: Settings) -> None:
    settings.dispatch.cores.update({"core-a": CoreSettings(concurrency=2), "core-b": CoreSettings(),
                                    "core-idle": CoreSettings()})


def _cores(api: Api, role: str = "viewer") -> dict[str, dict[str, Any]]:
    response = api.client.get("/cores", headers=api.headers(role))
    assert response.status_code == 200, response.text
    return {core["core_id"]: core for core in response.json()["cores"]}


def _dispatch(api: Api, core: str, count: int = 1, **extra: Any) -> None:
    response = api.client.post("/dispatch/batch", json={"tasks": [{"core_id": core, "action": "noop", **extra}]
                                                        * count}, headers=api.headers("operator"))
    assert response.status_code == 202, response.text


def _audit(api: Api, action: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    with session_scope(api.settings.database) as session:
        return [(r.actor, r.resource_id, r.details) for r in session.scalars(
            select(AuditRecord).where(AuditRecord.action == action).order_by(AuditRecord.id))]


def test_cores_overview_counts(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, tweak=_declare)
    _dispatch(api, "core-a", 3)
    assert len(TaskQueue(api.settings).claim("test-dispatcher", 1)) == 1
    cores = _cores(api)
    assert list(cores) == ["core-a", "core-b", "core-idle"]
    assert cores["core-a"] == {"core_id": "core-a", "concurrency": 2, "running": 1, "queued": 2, "reservation": None}
    assert cores["core-idle"] == {"core_id": "core-idle", "concurrency": 1, "running": 0, "queued": 0,
                                  "reservation": None}
    assert api.client.get("/cores", headers=api.headers("system")).status_code == 403


def test_stay_reservation_is_released_by_an_operator(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, tweak=_declare)
    operator = api.headers("operator")
    _dispatch(api, "core-b", stay=True)
    queue = TaskQueue(api.settings)
    [claim] = queue.claim("test-dispatcher", 1)
    assert queue.finish(claim, "completed")
    reservation = _cores(api)["core-b"]["reservation"]
    assert reservation["kind"] == "stay" and reservation["owner"] == "oscar"
    assert reservation["task_id"] == claim.task_id and reservation["expires_at"]

    released = api.client.post("/cores/core-b/release", headers=operator)
    assert released.status_code == 200, released.text
    assert released.json()["core_id"] == "core-b" and released.json()["reservation"] is None
    again = api.client.post("/cores/core-b/release", headers=operator)
    assert again.status_code == 409 and "not reserved" in again.json()["detail"]
    unknown = api.client.post("/cores/NOPE/release", headers=operator)
    assert unknown.status_code == 404 and "'NOPE'" in unknown.json()["detail"]
    assert api.client.post("/cores/core-b/release", headers=api.headers("viewer")).status_code == 403
    assert _audit(api, "core.release") == [("oscar", "core-b", {"owner": "oscar", "kind": "stay"})]


def test_isolation_needs_an_admin(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, tweak=_declare)
    admin, operator = api.headers("admin"), api.headers("operator")
    reason = {"reason": "disk errors on the host"}
    assert api.client.post("/cores/core-a/isolate", json=reason, headers=operator).status_code == 403
    assert api.client.post("/cores/NOPE/isolate", json=reason, headers=admin).status_code == 404
    assert api.client.post("/cores/core-a/isolate", json={}, headers=admin).status_code == 422

    isolated = api.client.post("/cores/core-a/isolate", json=reason, headers=admin)
    assert isolated.status_code == 200, isolated.text
    assert isolated.json()["reservation"]["kind"] == "isolated"
    _dispatch(api, "core-a")
    assert TaskQueue(api.settings).claim("test-dispatcher", 5) == []  # dispatch skips the isolated core

    refused = api.client.post("/cores/core-a/release", headers=operator)
    assert refused.status_code == 403 and "system:admin" in refused.json()["detail"]
    assert _cores(api)["core-a"]["reservation"]["kind"] == "isolated"
    released = api.client.post("/cores/core-a/release", headers=admin)
    assert released.status_code == 200 and released.json()["reservation"] is None
    assert [claim.core_id for claim in TaskQueue(api.settings).claim("test-dispatcher", 5)] == ["core-a"]
    assert _audit(api, "core.isolate") == [("alice", "core-a", reason)]
    assert [(actor, details["kind"]) for actor, _, details in _audit(api, "core.release")] == [("alice", "isolated")]
