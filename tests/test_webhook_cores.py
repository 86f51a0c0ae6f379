"""Per-core webhook authority on the real API: a report signed with a core's own secret moves only that
core's tasks, a core with its own secret refuses the shared one, and the shared secret still answers
``ping`` and reports for cores without a secret of their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import WEBHOOK_SECRET, Api

from orch.config.loader import ConfigError, load_settings
from orch.config.schema import CoreSettings, Settings
from orch.dispatch.queue import TaskQueue
from orch.security.webhook_signature import SignatureError, sign, verify

SECRET_A = "core-a-own-secret-0123456789"  # pragma: allowlist secret
SECRET_B = "core-b-own-secret-0123456789"  # pragma: allowlist secret


def _declare_cores(settings: Settings) -> None:
    settings.dispatch.cores = {"core-a": CoreSettings(webhook_secret=SECRET_A),
                               "core-b": CoreSettings(webhook_secret=SECRET_B),
                               "core-c": CoreSettings()}  # declared, no secret of its own


def _post(api: Api, secret: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    return api.client.post("/webhook", content=body, headers={"X-Signature": sign(secret, body),
                                                               "Content-Type": "application/json"})


def _running_task(api: Api, core_id: str) -> str:
    task_id = api.client.post("/dispatch", headers=api.headers("operator"),
                              json={"core_id": core_id, "action": "external"}).json()["task_id"]
    [claim] = TaskQueue(api.settings).claim(f"core:{core_id}", 1, external_core=core_id)
    assert claim.task_id == task_id
    return str(task_id)


def _report(api: Api, secret: str, task_id: str, **extra: Any) -> Any:
    return _post(api, secret, {"event": "task.completed", "task_id": task_id, "attempt": 1, **extra})


def test_a_core_secret_moves_only_its_own_cores_tasks(api_factory: Any, database_url: str) -> None:
    api: Api = api_factory(database_url, tweak=_declare_cores)
    task_a, task_b, task_c = (_running_task(api, core) for core in ("core-a", "core-b", "core-c"))

    def status(task_id: str) -> str:
        return str(TaskQueue(api.settings).get(task_id)["status"])

    # Core A's secret cannot report on core B's or core C's task.
    for task_id, owner in ((task_b, "core-b"), (task_c, "core-c")):
        refused = _report(api, SECRET_A, task_id)
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == (f"webhook refused: signed with core core-a's secret, but task "
                                            f"{task_id} belongs to core {owner}")
        assert status(task_id) == "running"
    # The shared secret cannot report on a core that has its own secret.
    refused = _report(api, WEBHOOK_SECRET, task_a)
    assert refused.status_code == 403 and "core core-a has its own secret" in refused.json()["detail"]
    assert status(task_a) == "running"

    # Each core's own secret reports on its own task; the shared one on the core without a secret.
    for secret, task_id in ((SECRET_A, task_a), (SECRET_B, task_b), (WEBHOOK_SECRET, task_c)):
        done = _report(api, secret, task_id, result={"by": secret[:6]})
        assert done.status_code == 200 and done.json()["task_status"] == "completed", done.text
        assert status(task_id) == "completed"

    # ping works with the shared secret (and with a core's own); a stranger's secret is still a 401.
    assert _post(api, WEBHOOK_SECRET, {"event": "ping"}).json() == {"accepted": True, "event": "ping",
                                                                     "task_status": None}
    assert _post(api, SECRET_B, {"event": "ping", "n": 2}).status_code == 200
    assert _post(api, "a-stranger's-secret-0123456789", {"event": "ping", "n": 3}).status_code == 401


def test_without_declared_cores_the_shared_secret_reports_for_any_core(api: Api) -> None:
    task_id = _running_task(api, "core-z")
    assert _report(api, WEBHOOK_SECRET, task_id).json()["task_status"] == "completed"


def test_verify_names_the_signer_and_prefers_the_shared_secret() -> None:
    body = b'{"event":"ping"}'
    secrets = {None: WEBHOOK_SECRET, "core-a": SECRET_A, "core-b": SECRET_B}
    assert verify(secrets, sign(SECRET_B, body), body, tolerance=300)[0] == "core-b"
    assert verify(secrets, sign(WEBHOOK_SECRET, body), body, tolerance=300)[0] is None
    # a core secret equal to the shared one is taken for the shared one: that core's tasks refuse it
    assert verify({None: SECRET_A, "core-a": SECRET_A}, sign(SECRET_A, body), body, tolerance=300)[0] is None
    with pytest.raises(SignatureError, match="does not match"):
        verify(secrets, sign("another-secret-0123456789", body), body, tolerance=300)


def test_core_secrets_come_from_the_configuration_and_are_masked(tmp_path: Path) -> None:
    config = tmp_path / "orch.yaml"
    config.write_text("dispatch:\n  cores:\n    core-a:\n      webhook_secret: ${CORE_A_WEBHOOK_SECRET}\n"
                      "    core-b:\n      webhook_secret: ${CORE_B_WEBHOOK_SECRET:-}\n")
    environ = {"ORCH_HOME": str(tmp_path), "CORE_A_WEBHOOK_SECRET": SECRET_A}
    settings = load_settings(config, environ=environ, generate_secrets=False)
    core_a = settings.dispatch.cores["core-a"].webhook_secret
    assert core_a is not None and core_a.get_secret_value() == SECRET_A
    assert settings.dispatch.cores["core-b"].webhook_secret is None  # empty means "not configured"
    assert SECRET_A in settings.secret_values()  # registered for log masking like the other secrets
    assert SECRET_A not in repr(settings)

    with pytest.raises(ConfigError) as same:
        load_settings(config, environ={**environ, "CORE_B_WEBHOOK_SECRET": SECRET_A}, generate_secrets=False)
    assert "cores core-a and core-b have the same webhook_secret" in str(same.value)
    assert SECRET_A not in str(same.value)
    with pytest.raises(ConfigError, match="core-a.webhook_secret: must be at least 16 characters"):
        load_settings(config, environ={**environ, "CORE_A_WEBHOOK_SECRET": "short"}, generate_secrets=False)
