"""The audit trail in the database and in logs/audit.log, and no secret in any log the API writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import JWT_SECRET, MCP_TOKEN, PASSWORD, WEBHOOK_SECRET

from orch.logging_config import configure_logging, reset_logging
from orch.redaction import register_secret
from orch.security.webhook_signature import sign

GUIDE_FIELDS = {"timestamp", "user_id", "username", "action", "resource", "resource_id", "ip_address",
                "user_agent", "success", "details"}


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ORCH_LOG_LEVEL", "INFO")
    yield
    reset_logging()


def test_audit_log_lines_and_no_secrets_anywhere(api_factory: Any, isolated_env: Path, logged: Any) -> None:
    api = api_factory()
    settings = api.settings
    for value in settings.secret_values():
        register_secret(value)
    configure_logging(settings.logging, force=True, allow_file_in_pytest=True)
    client = api.client
    client.post("/auth/token", data={"username": "alice", "password": "Wr0ng-" + PASSWORD})
    token = api.login("alice").json()["access_token"]
    admin = {"Authorization": f"Bearer {token}", "User-Agent": "audit-test/1.0"}
    client.post("/users", json={"username": "dora", "password": PASSWORD + "x", "role": "viewer"}, headers=admin)
    task = client.post("/dispatch", json={"core_id": "c", "action": "noop", "params": {},
                                          "metadata": {"api_key": "sk-live-abcdef123456"}}, headers=admin).json()
    client.post(f"/tasks/{task['task_id']}/cancel", headers=admin)
    body = json.dumps({"event": "ping"}).encode()
    client.post("/webhook", content=body, headers={"X-Signature": sign(WEBHOOK_SECRET, body)})
    client.get("/mcp/ping", headers={"Authorization": f"Bearer {MCP_TOKEN}"})
    client.get(f"/tasks?access_token={token}")
    reset_logging()

    lines = [json.loads(line) for line in Path(settings.logging.audit_file).read_text().splitlines()]
    actions = [(entry["username"], entry["action"], entry["success"]) for entry in lines]
    assert ("alice", "authenticate", False) in actions and ("alice", "authenticate", True) in actions
    assert ("alice", "user.create", True) in actions and ("alice", "task.create", True) in actions
    assert ("alice", "task.cancel", True) in actions
    assert all(set(entry) >= GUIDE_FIELDS for entry in lines)
    cancel = next(e for e in lines if e["action"] == "task.cancel")
    assert cancel["user_agent"] == "audit-test/1.0" and cancel["resource_id"] == task["task_id"]
    rows = client.get("/audit", params={"limit": 1000}, headers=admin).json()["entries"]
    assert len(rows) >= len(lines) - 4  # the file holds what the database holds (minus the fixture's users)

    api_log = Path(settings.logging.file).read_text()
    assert any(json.loads(line).get("event_type") == "http_request" for line in api_log.splitlines())
    everything = api_log + Path(settings.logging.audit_file).read_text()
    for secret in (PASSWORD, JWT_SECRET, WEBHOOK_SECRET, MCP_TOKEN, token, "sk-live-abcdef123456"):
        assert secret not in everything, secret[:6]
