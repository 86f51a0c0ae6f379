"""Prefect's API behind its auth string: the session's real server refuses what comes without it, ORCH's
own calls carry it, ``orch up``'s generated string is private and stable, and one given wins.

The session server (conftest's ``prefect_server``) is started with PREFECT_SERVER_API_AUTH_STRING, so the
rest of the suite also proves ORCH works against an authenticated Prefect.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from support import prefect_auth

from orch.config.loader import ConfigError, load_settings
from orch.config.schema import PrefectSettings
from orch.prefect_api import online_workers, prefect_readiness

SESSION_AUTH = "PREFECT_API_AUTH_STRING"


def session_prefect(prefect_server: str, auth_string: str | None = None) -> PrefectSettings:
    given = os.environ[SESSION_AUTH] if auth_string is None else auth_string
    return PrefectSettings(api_url=prefect_server, auth_string=given or None)


def test_prefect_api_refuses_callers_without_the_auth_string(prefect_server: str) -> None:
    """The holes of issue 14: starting any flow and reading the notification secrets, anonymously."""
    assert httpx.post(f"{prefect_server}/deployments/filter", json={}, timeout=10).status_code == 401
    secrets = httpx.post(f"{prefect_server}/block_documents/filter", json={"include_secrets": True}, timeout=10)
    assert secrets.status_code == 401 and "hooks" not in secrets.text
    wrong = {"Authorization": "Basic " + "b3JjaDp3cm9uZy1zdHJpbmctMDEyMzQ1Njc4OQ=="}  # orch:wrong-string-0123456789
    assert httpx.post(f"{prefect_server}/deployments/filter", json={}, headers=wrong, timeout=10).status_code == 401
    assert httpx.post(f"{prefect_server}/deployments/filter", json={}, headers=prefect_auth(),
                      timeout=10).status_code == 200
    assert httpx.get(f"{prefect_server}/ready", timeout=10).status_code == 200  # probes stay anonymous


def test_readiness_and_online_workers_authenticate(prefect_server: str) -> None:
    """ORCH's health questions send the string; without it, readiness says why instead of 'ready'."""
    pool = f"auth-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=prefect_server, headers=prefect_auth(), timeout=10) as prefect:
        prefect.post("/work_pools/", json={"name": pool, "type": "process"}).raise_for_status()
        prefect.post(f"/work_pools/{pool}/workers/heartbeat", json={"name": "w1"}).raise_for_status()

    ready = prefect_readiness(session_prefect(prefect_server))
    assert ready.ready and ready.problem is None, ready
    assert online_workers(session_prefect(prefect_server), pool) == 1

    missing = prefect_readiness(session_prefect(prefect_server, ""))
    assert not missing.ready and missing.problem is not None
    assert missing.problem.startswith("HTTP 401") and "is not set" in missing.problem
    refused = prefect_readiness(session_prefect(prefect_server, "orch:not-the-servers-string-0123"))
    assert not refused.ready and "was refused" in str(refused.problem)
    assert "not-the-servers-string" not in str(refused.problem)
    assert online_workers(session_prefect(prefect_server, ""), pool) == 0


def test_notification_secrets_are_masked_without_include_secrets(
        prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a caller holding the auth string only sees the Slack URL, SMTP password and webhook URL when
    it asks for them: the UI and the API mask Secret fields by default."""
    from blocks.register import register_blocks

    slack = f"https://hooks.example.test/services/{uuid.uuid4().hex}"
    webhook = f"https://alerts.example.test/hook?token={uuid.uuid4().hex}"
    password = f"smtp-{uuid.uuid4().hex}"
    settings = load_settings(environ={
        "ORCH_HOME": ".", "SLACK_WEBHOOK_URL": slack, "SMTP_SERVER": "127.0.0.1", "SMTP_PASSWORD": password,
        "SMTP_USERNAME": "orch", "ORCH_NOTIFICATIONS__EMAIL__TO_ADDRESSES": "[ops@example.com]",
        "ORCH_NOTIFICATIONS__WEBHOOK__URL": webhook}, generate_secrets=False)
    assert len(register_blocks(settings)) == 3

    query = {"block_documents": {"name": {"any_": ["orch-slack", "orch-email", "orch-webhook"]}}}
    masked = httpx.post(f"{prefect_server}/block_documents/filter", json=query, headers=prefect_auth(), timeout=10)
    assert masked.status_code == 200 and len(masked.json()) == 3, masked.text
    for secret in (slack, webhook, password):
        assert secret not in masked.text
    fields = {doc["name"]: doc["data"] for doc in masked.json()}
    masked_fields = [fields["orch-slack"]["url"], fields["orch-webhook"]["url"], fields["orch-email"]["password"]]
    assert masked_fields == ["********"] * 3
    full = httpx.post(f"{prefect_server}/block_documents/filter", json={**query, "include_secrets": True},
                      headers=prefect_auth(), timeout=10)
    assert slack in full.text  # the authenticated owner can still read them back


def test_generated_string_is_stable_private_and_masked(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server `orch up` starts gets a string made once into data/secrets.json (0600), in the form
    Prefect's UI login asks for; logging masks it."""
    from orch.logging_config import configure_process_logging, reset_logging
    from orch.redaction import redact

    for name in (SESSION_AUTH, "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    first = load_settings()
    assert first.prefect.auth_string is not None
    value = first.prefect.auth_string.get_secret_value()
    user, _, password = value.partition(":")
    assert user == "orch" and len(password) >= 32
    secrets_file = isolated_env / "data" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert json.loads(secrets_file.read_text())["prefect_auth_string"] == value
    assert load_settings().prefect.auth_string.get_secret_value() == value  # type: ignore[union-attr]
    assert value not in repr(first) and value not in str(first.model_dump())

    try:
        configure_process_logging(first, write_file=False)
        assert redact(f"Authorization for {value} refused") == "Authorization for *** refused"
    finally:
        reset_logging()


def test_a_given_string_wins_and_none_is_made_for_an_existing_server(
        isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (SESSION_AUTH, "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "ops:from-the-secret-manager-1")
    assert load_settings().prefect.auth_string.get_secret_value() == "ops:from-the-secret-manager-1"  # type: ignore[union-attr]
    monkeypatch.setenv(SESSION_AUTH, "ops:from-systemd-environment-2")  # the clients' name wins over the server's
    assert load_settings().prefect.auth_string.get_secret_value() == "ops:from-systemd-environment-2"  # type: ignore[union-attr]
    stored = json.loads((isolated_env / "data" / "secrets.json").read_text())
    assert "prefect_auth_string" not in stored

    monkeypatch.delenv(SESSION_AUTH)
    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING")
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.internal:4200/api")
    assert load_settings().prefect.auth_string is None  # an existing server's string can only be given
    assert "prefect_auth_string" not in json.loads((isolated_env / "data" / "secrets.json").read_text())

    monkeypatch.setenv(SESSION_AUTH, "short")
    with pytest.raises(ConfigError) as weak:
        load_settings(generate_secrets=False)
    assert weak.value.errors == ["prefect.auth_string: must be at least 16 characters"]


def test_production_requires_the_string(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (SESSION_AUTH, "PREFECT_SERVER_API_AUTH_STRING"):
        monkeypatch.delenv(name, raising=False)
    environ = {"ORCH_HOME": str(isolated_env), "ORCH_ENVIRONMENT": "production",
               "JWT_SECRET": "production-jwt-secret-0123456789", "WEBHOOK_SECRET": "production-hook-0123456789",
               "PREFECT_API_URL": "http://prefect.internal:4200/api"}
    with pytest.raises(ConfigError) as missing:
        load_settings(environ=environ)
    assert missing.value.errors == ["prefect.auth_string: required when environment is production "
                                    "(set PREFECT_API_AUTH_STRING, the server's PREFECT_SERVER_API_AUTH_STRING)"]
    settings = load_settings(environ={**environ, SESSION_AUTH: "orch:production-prefect-string"})
    assert settings.prefect.auth_string is not None
    assert not (isolated_env / "data").exists()  # production generates nothing


def test_every_child_of_orch_up_gets_the_string(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server child checks PREFECT_SERVER_API_AUTH_STRING, the worker, flows and `prefect deploy` send
    PREFECT_API_AUTH_STRING: both are the one string ORCH resolved."""
    from orch.stack.up import child_environment, components

    for name in (SESSION_AUTH, "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    value = settings.prefect.auth_string.get_secret_value()  # type: ignore[union-attr]
    env = child_environment(settings, None)
    assert env["PREFECT_SERVER_API_AUTH_STRING"] == env[SESSION_AUTH] == value
    plan = components(settings, env, "orch-process")
    assert all(component.env[SESSION_AUTH] == value for component in plan.values())


def test_get_settings_shares_the_string_with_prefects_client(
        isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that resolved its string from ORCH's configuration (not PREFECT_API_AUTH_STRING) gives
    it to Prefect's own client, even when Prefect was imported (and its settings frozen) before."""
    import prefect.context  # noqa: F401 - Prefect's settings frozen first, as in a worker
    from prefect.settings import get_current_settings

    from orch.config.runtime import get_settings

    monkeypatch.setenv("ORCH_PREFECT__AUTH_STRING", "orch:from-orch-configuration-3")
    assert get_settings().prefect.auth_string.get_secret_value() == "orch:from-orch-configuration-3"  # type: ignore[union-attr]
    assert os.environ[SESSION_AUTH] == "orch:from-orch-configuration-3"
    seen = get_current_settings().api.auth_string
    assert seen is not None and seen.get_secret_value() == "orch:from-orch-configuration-3"


def test_service_install_generates_one_string_for_the_server_and_the_services(tmp_path: Path) -> None:
    """install.sh: prefect-server.env (the server's) and orch-next.env (the services') get the same
    string, 0600, never printed; a re-run changes neither."""
    import subprocess

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    script = Path(__file__).resolve().parents[1] / "infra" / "systemd" / "install.sh"
    first = subprocess.run(["bash", str(script), "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    server_env = root / "etc/orch-next/prefect-server.env"
    services_env = root / "etc/orch-next/orch-next.env"
    server = dict(line.split("=", 1) for line in server_env.read_text().splitlines() if "=" in line)
    services = dict(line.split("=", 1) for line in services_env.read_text().splitlines() if "=" in line)
    auth = server["PREFECT_SERVER_API_AUTH_STRING"]
    assert auth.startswith("orch:") and len(auth) >= 40 and services["PREFECT_API_AUTH_STRING"] == auth
    assert stat.S_IMODE(server_env.stat().st_mode) == stat.S_IMODE(services_env.stat().st_mode) == 0o600
    assert auth not in first.stdout + first.stderr
    before = (server_env.read_text(), services_env.read_text())
    again = subprocess.run(["bash", str(script), "--root", str(root)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and (server_env.read_text(), services_env.read_text()) == before


def test_the_monitoring_sweep_measures_prefects_lag_through_the_auth(prefect_server: str) -> None:
    """The lag sample needs an authenticated flow-run query; without the string it would silently vanish."""
    from orch.monitoring.samples import collect_prefect

    settings = load_settings(environ={"ORCH_HOME": ".", "PREFECT_API_URL": prefect_server,
                                      SESSION_AUTH: os.environ[SESSION_AUTH]}, generate_secrets=False)
    names = {sample.metric for sample in collect_prefect(settings)}
    assert {"prefect_up", "prefect_latency_ms", "prefect_lag_seconds"} <= names
