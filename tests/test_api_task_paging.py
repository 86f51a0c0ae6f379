"""``GET /tasks`` keyset paging and filters, and ``POST /tasks/bulk``, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from api_fixtures import Api
from sqlalchemy import select

from orch.dispatch.queue import TaskQueue
from orch.storage.engine import session_scope
from orch.storage.models import AuditRecord, Task


def _batch(api: Api, core: str, count: int, action: str = "noop") -> list[str]:
    """``count`` tasks queued in one batch: one transaction, so they share their ``created_at`` (ties)."""
    response = api.client.post("/dispatch/batch", json={"tasks": [{"core_id": core, "action": action}] * count},
                               headers=api.headers("operator"))
    assert response.status_code == 202, response.text
    return [task["task_id"] for task in response.json()["tasks"]]


def _all_pages(api: Api, role: str = "viewer", **params: Any) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        response = api.client.get("/tasks", params={**params, **({"cursor": cursor} if cursor else {})},
                                  headers=api.headers(role))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([task["task_id"] for task in body["tasks"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def _expected(api: Api, **where: Any) -> list[str]:
    with session_scope(api.settings.database) as session:
        query = select(Task.task_id).order_by(Task.created_at.desc(), Task.task_id)
        for column, value in where.items():
            query = query.where(getattr(Task, column) == value)
        return list(session.scalars(query))


def _fail(api: Api, core: str, count: int) -> list[str]:
    """Really run ``count`` of the core's tasks to failure: claimed, then finished as failed."""
    queue = TaskQueue(api.settings)
    claims = queue.claim("test-dispatcher", count)
    assert len(claims) == count and {c.core_id for c in claims} == {core}
    for claim in claims:
        assert queue.finish(claim, "failed", error="boom")
    return [claim.task_id for claim in claims]


def test_pages_cover_every_task_once_in_order_with_ties(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, ORCH_DISPATCH__CORE_CONCURRENCY="100")
    for _ in range(3):
        _batch(api, "core-a", 5)
        _batch(api, "core-b", 4)
    pages = _all_pages(api, limit=4)
    flat = [task_id for page in pages for task_id in page]
    assert flat == _expected(api) and len(flat) == 27 and len(set(flat)) == 27
    assert [len(page) for page in pages] == [4] * 6 + [3]

    core_b = [task_id for page in _all_pages(api, core_id="core-b", limit=5) for task_id in page]
    assert core_b == _expected(api, core_id="core-b") and len(core_b) == 12

    cancelled = api.client.post(f"/tasks/{core_b[0]}/cancel", headers=api.headers("operator")).json()
    by_status = [t for page in _all_pages(api, status="cancelled", limit=1) for t in page]
    assert by_status == [cancelled["task_id"]]
    mine = [t for page in _all_pages(api, owner="oscar", action="noop", limit=10) for t in page]
    assert mine == flat
    assert _all_pages(api, owner="alice") == [[]]

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _all_pages(api, since=later) == [[]]
    assert [t for page in _all_pages(api, until=later, limit=13) for t in page] == flat


def test_bad_cursor_and_cursor_with_offset_are_422(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    _batch(api, "core-a", 3)
    viewer = api.headers("viewer")
    cursor = api.client.get("/tasks", params={"limit": 1}, headers=viewer).json()["next_cursor"]
    assert cursor
    forged = base64.urlsafe_b64encode(b'["yesterday","x"]').decode()
    for bad in ("not-a-cursor", "%%%", forged, base64.urlsafe_b64encode(b"{}").decode(), "A" * 300):
        response = api.client.get("/tasks", params={"cursor": bad}, headers=viewer)
        assert response.status_code == 422, (bad, response.text)
        # the app's word for a query it refuses: it was "invalid task", though no task was asked for
        assert response.json()["detail"] == "invalid request" and "cursor" in response.json()["errors"][0], \
            response.text
    both = api.client.get("/tasks", params={"cursor": cursor, "offset": 1}, headers=viewer)
    assert both.status_code == 422 and both.json() == {
        "detail": "invalid request", "errors": ["cursor: give either cursor or offset, not both"]}
    naive = api.client.get("/tasks", params={"since": "2026-01-01T00:00:00"}, headers=viewer)
    assert naive.status_code == 422 and naive.json()["detail"] == "invalid request" and "time zone" in naive.text


def test_a_core_sees_only_its_own_tasks(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    own = _batch(api, "core-a", 3)
    _batch(api, "core-b", 3)
    assert sorted(t for page in _all_pages(api, role="system", limit=2) for t in page) == sorted(own)
    other = api.client.get("/tasks", params={"core_id": "core-b"}, headers=api.headers("system")).json()
    assert other["tasks"] == [] and other["next_cursor"] is None


def _audited(api: Api, action: str) -> list[str]:
    with session_scope(api.settings.database) as session:
        return list(session.scalars(select(AuditRecord.resource_id).where(AuditRecord.action == action)
                                    .order_by(AuditRecord.id)))


def test_bulk_cancel_and_retry_by_ids_and_filter(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url, ORCH_DISPATCH__CORE_CONCURRENCY="100")
    operator = api.headers("operator")
    queued = _batch(api, "core-a", 4)
    failed = _fail(api, "core-a", 2)
    still_queued = [t for t in queued if t not in failed]

    by_ids = api.client.post("/tasks/bulk", json={"op": "retry", "task_ids": [*failed, still_queued[0], "nope"]},
                             headers=operator)
    assert by_ids.status_code == 200, by_ids.text
    body = by_ids.json()
    assert body["op"] == "retry" and body["matched"] == 3 and sorted(body["changed"]) == sorted(failed)
    assert body["skipped"] == [{"task_id": still_queued[0], "reason": "queued: only failed or timed-out tasks are "
                                "retried"}, {"task_id": "nope", "reason": "no such task"}]
    assert sorted(_audited(api, "task.retry")) == sorted(failed)

    cancel = api.client.post("/tasks/bulk", json={"op": "cancel", "filter": {"core_id": "core-a"}, "limit": 3},
                             headers=operator).json()
    assert cancel["matched"] == 3 and len(cancel["changed"]) == 3 and cancel["skipped"] == []
    assert cancel["changed"] == _expected(api, core_id="core-a")[:3]
    assert sorted(_audited(api, "task.cancel")) == sorted(cancel["changed"])

    explicit = api.client.post("/tasks/bulk", json={"op": "cancel", "filter": {"status": "cancelled"}},
                               headers=operator).json()
    assert explicit["changed"] == [] and len(explicit["skipped"]) == 3
    assert {s["reason"] for s in explicit["skipped"]} == {"cancelled: only queued or running tasks are cancelled"}


def test_bulk_validation_and_permission(api_factory: Any, database_url: str) -> None:
    api = api_factory(database_url)
    [task_id] = _batch(api, "core-a", 1)
    operator = api.headers("operator")
    for body in ({"op": "cancel"}, {"op": "cancel", "task_ids": [task_id], "filter": {}},
                 {"op": "explode", "task_ids": [task_id]}, {"op": "cancel", "task_ids": []},
                 {"op": "cancel", "task_ids": ["x"] * 1001}, {"op": "cancel", "filter": {}, "limit": 0},
                 {"op": "cancel", "filter": {}, "limit": 1001}, {"op": "cancel", "filter": {"status": "bogus"}}):
        response = api.client.post("/tasks/bulk", json=body, headers=operator)
        assert response.status_code == 422, (body, response.text)
    refused = api.client.post("/tasks/bulk", json={"op": "cancel", "task_ids": [task_id]},
                              headers=api.headers("viewer"))
    assert refused.status_code == 403
    assert api.client.get(f"/tasks/{task_id}", headers=operator).json()["status"] == "queued"
