"""One masking rule for every response that carries task params, metadata, results, errors and events:
what SSE masks, ``/tasks``, ``/tasks/{id}``, ``/jobs/{id}/events`` and the task-returning writes mask too,
for every role, while the dispatcher and the claiming core still get the real values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from api_fixtures import Api

from orch.dispatch.queue import TaskQueue

META_PASSWORD = "meta-pw-5eCr3t-0001"  # pragma: allowlist secret
ERROR_PASSWORD = "err-pw-5eCr3t-0002"  # pragma: allowlist secret
URL_PASSWORD = "url-pw-5eCr3t-0003"  # pragma: allowlist secret
ENV_PASSWORD = "env-pw-5eCr3t-0004"  # pragma: allowlist secret
SECRETS = (META_PASSWORD, ERROR_PASSWORD, URL_PASSWORD, ENV_PASSWORD)
DB_URL = f"postgresql://orch:{URL_PASSWORD}@db.internal:5432/orch"
MASKED_URL = "postgresql://orch:***@db.internal:5432/orch"


def _leaks(body: Any) -> list[str]:
    text = json.dumps(body)
    return [secret for secret in SECRETS if secret in text]


def _failed_external_task(api: Api) -> str:
    """An external task whose params, metadata and error each hold a secret, claimed and failed by its core."""
    client = api.client
    accepted = client.post("/dispatch", headers=api.headers("operator"), json={
        "core_id": "core-a", "action": "external", "params": {"database_url": DB_URL, "rows": 3},
        "metadata": {"password": META_PASSWORD, "ticket": "OPS-1"}})
    assert accepted.status_code == 202, accepted.text
    assert _leaks(accepted.json()) == []
    task_id = str(accepted.json()["task_id"])
    claimed = client.post("/cores/core-a/claim", headers=api.headers("system")).json()["tasks"]
    # The core doing the work gets the real params: masking is for what people read, not for the worker.
    assert [(t["task_id"], t["params"]["database_url"]) for t in claimed] == [(task_id, DB_URL)]
    report = client.put(f"/jobs/{task_id}/status", headers=api.headers("system"), json={
        "status": "failed", "error": f"login refused: password={ERROR_PASSWORD}"})
    assert report.status_code == 200, report.text
    assert _leaks(report.json()) == [] and report.json()["error"] == "login refused: password=***"
    return task_id


def test_every_role_reads_tasks_and_events_masked(api_factory: Any, database_url: str) -> None:
    api: Api = api_factory(database_url)
    task_id = _failed_external_task(api)
    for role in ("viewer", "operator", "admin", "system"):
        task = api.client.get(f"/tasks/{task_id}", headers=api.headers(role)).json()
        assert _leaks(task) == [], role
        assert task["params"] == {"database_url": MASKED_URL, "rows": 3}
        assert (task["metadata"]["password"], task["metadata"]["ticket"]) == ("***", "OPS-1")
        assert task["error"] == "login refused: password=***"

        listed = api.client.get("/tasks", params={"core_id": "core-a"}, headers=api.headers(role)).json()
        assert [t["task_id"] for t in listed["tasks"]] == [task_id] and listed["tasks"][0] == task

        events = api.client.get(f"/jobs/{task_id}/events", headers=api.headers(role)).json()["events"]
        assert _leaks(events) == [], role
        by_type = {e["event_type"]: e["data"] for e in events}
        assert by_type["task.created"]["metadata"] == task["metadata"]
        assert by_type["task.failed"]["error"] == "login refused: password=***"

    # The stored task keeps the real values: masking happens in responses only.
    stored = TaskQueue(api.settings).get(task_id)
    assert (stored["params"]["database_url"], stored["metadata"]["password"]) == (DB_URL, META_PASSWORD)
    assert ERROR_PASSWORD in stored["error"]

    retried = api.client.post(f"/tasks/{task_id}/retry", headers=api.headers("operator"))
    assert retried.status_code == 200 and _leaks(retried.json()) == []
    assert retried.json()["metadata"]["password"] == "***"
    cancelled = api.client.post(f"/tasks/{task_id}/cancel", headers=api.headers("operator"))
    assert cancelled.status_code == 200 and _leaks(cancelled.json()) == []
    assert cancelled.json()["params"]["database_url"] == MASKED_URL


def test_a_result_is_masked_and_its_shape_kept(api: Api) -> None:
    client = api.client
    task_id = client.post("/dispatch", headers=api.headers("operator"),
                          json={"core_id": "core-a", "action": "external"}).json()["task_id"]
    client.post("/cores/core-a/claim", headers=api.headers("system"))
    result = {"dsn": DB_URL, "auth": {"token": "t0k3n-value-0005"}, "count": 2, "ok": True,  # pragma: allowlist secret
              "rows": [{"api_key": "k3y-value-0006"}, "plain"]}  # pragma: allowlist secret
    done = client.put(f"/jobs/{task_id}/status", headers=api.headers("system"),
                      json={"status": "completed", "result": result})
    assert done.status_code == 200, done.text
    shown = client.get(f"/tasks/{task_id}", headers=api.headers("viewer")).json()["result"]
    assert shown == {"dsn": MASKED_URL, "auth": {"token": "***"}, "count": 2, "ok": True,
                     "rows": [{"api_key": "***"}, "plain"]}
    assert TaskQueue(api.settings).get(task_id)["result"] == result


def test_the_dispatcher_runs_with_the_real_values(
        api_factory: Any, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell task gets its real environment (its output shows it in the stored row), while every
    response shows the same task masked."""
    from flows.dispatch import dispatch
    from orch.config.runtime import reset_settings_cache

    allow = "[/usr/bin/env]"
    monkeypatch.setenv("ORCH_DISPATCH__SHELL_ALLOWLIST", allow)
    reset_settings_cache()
    api: Api = api_factory(ORCH_DISPATCH__SHELL_ALLOWLIST=allow)
    accepted = api.client.post("/dispatch", headers=api.headers("operator"), json={
        "core_id": "core-a", "action": "shell",
        "params": {"argv": ["/usr/bin/env"], "env": {"DB_PASSWORD": ENV_PASSWORD, "DB_URL": DB_URL}}})
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]

    assert dispatch(run_for_seconds=0)["finished"] == 1
    stored = TaskQueue(api.settings).get(task_id)
    assert stored["status"] == "completed", stored
    assert f"DB_PASSWORD={ENV_PASSWORD}\n" in stored["result"]["stdout"]
    assert f"DB_URL={DB_URL}\n" in stored["result"]["stdout"]

    shown = api.client.get(f"/tasks/{task_id}", headers=api.headers("viewer")).json()
    assert _leaks(shown) == []
    assert shown["params"]["env"] == {"DB_PASSWORD": "***", "DB_URL": MASKED_URL}
    assert "DB_PASSWORD=***\n" in shown["result"]["stdout"] and f"DB_URL={MASKED_URL}\n" in shown["result"]["stdout"]
