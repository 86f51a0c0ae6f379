"""Fixtures for the API tests: the real app on a real migrated database, with one user per role.

``api`` drives the app in-process through Starlette's TestClient (the real ASGI stack, middleware
included); tests that need real sockets start uvicorn with :func:`serve`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from support import free_port, wait_until

from orch.api.app import create_app
from orch.config.loader import load_settings
from orch.config.schema import Settings
from orch.security.users import create_user
from orch.storage.engine import session_scope
from orch.storage.migrate import upgrade

PASSWORD = "Sup3r-Secret-Pw!"
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
JWT_SECRET = "jwt-test-secret-0123456789abcdef"
MCP_TOKEN = "mcp-test-token-0123456789abcdef"
ROLE_USERS = {"admin": "alice", "operator": "oscar", "viewer": "vera", "system": "core-a"}


@dataclass
class Api:
    client: TestClient
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer token

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def login(self, username: str, password: str = PASSWORD) -> Any:
        return self.client.post("/auth/token", data={"username": username, "password": password})


def make_settings(home: Path, database_url: str | None = None, **environ: str) -> Settings:
    env = {"ORCH_HOME": str(home), "JWT_SECRET": JWT_SECRET, "WEBHOOK_SECRET": WEBHOOK_SECRET,
           "ORCH_MCP_TOKEN": MCP_TOKEN, "PREFECT_API_URL": os.environ.get("PREFECT_API_URL",
                                                                           f"http://127.0.0.1:{free_port()}/api"),
           "PREFECT_API_AUTH_STRING": os.environ.get("PREFECT_API_AUTH_STRING", "orch-test:no-session-server"),
           **({"DATABASE_URL": database_url} if database_url else {}), **environ}
    settings = load_settings(environ=env, generate_secrets=False)
    settings.security.rate_limit.requests_per_minute = 100_000
    settings.security.rate_limit.burst_size = 100_000
    upgrade(settings.database, create_database=True)
    return settings


def add_users(settings: Settings) -> None:
    from sqlalchemy import select

    from orch.storage.models import User

    with session_scope(settings.database, write_lock=True) as session:
        existing = set(session.scalars(select(User.username)))
        for role, name in ROLE_USERS.items():
            if name in existing:
                continue
            create_user(session, username=name, password=PASSWORD, role=role,
                        policy=settings.security.password_policy, actor="test")


@contextmanager
def api_for(settings: Settings) -> Iterator[Api]:
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        api = Api(client, settings)
        for role, name in ROLE_USERS.items():
            response = api.login(name)
            assert response.status_code == 200, response.text
            api.tokens[role] = response.json()["access_token"]
        yield api


@pytest.fixture
def api_factory(isolated_env: Path) -> Iterator[Callable[..., Any]]:
    """Build an :class:`Api` for settings adjusted by keyword environment variables."""
    stack: list[Any] = []

    def build(database_url: str | None = None, tweak: Callable[[Settings], None] | None = None,
              **environ: str) -> Api:
        settings = make_settings(isolated_env, database_url, **environ)
        if tweak:
            tweak(settings)
        add_users(settings)
        manager = api_for(settings)
        stack.append(manager)
        return manager.__enter__()

    yield build
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
def api(api_factory: Callable[..., Api]) -> Api:
    return api_factory()


@pytest.fixture
def approval_settings(prefect_server: str, isolated_env: Path, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Build settings with a target ``web`` that is down until its ``isolate`` runs (it creates
    ``tmp_path / "isolated"``, the file its health check looks for), an action that needs approval, and a
    user per role. They are written to the configuration file the self-heal flow in this process loads, so
    an API built on them shares the flow's database. Keyword arguments add top-level sections
    (``notifications=...``)."""
    from orch.config.runtime import get_settings, reset_settings_cache

    def build(**sections: Any) -> Settings:
        fixed = tmp_path / "isolated"
        config = {"monitoring": {"orch_targets": False,
                                 "targets": [{"name": "web", "health_check": {"command": ["test", "-e", str(fixed)]},
                                              "isolate": {"command": ["touch", str(fixed)]}}],
                                 "self_healing": {"max_retries": 1, "settle_seconds": 5,
                                                  "require_approval": ["isolate"], "approval_timeout": 300}},
                  **sections}
        path = isolated_env / "orch.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("ORCH_CONFIG_PATH", str(path))
        reset_settings_cache()
        settings = make_settings(isolated_env, ORCH_CONFIG_PATH=str(path))
        assert settings.database.url == get_settings().database.url
        add_users(settings)
        return settings

    return build


@contextmanager
def serve_app(settings: Settings, **options: Any) -> Iterator[tuple[str, Any]]:
    """The real app under uvicorn with the options ``python -m orch.api.server`` uses (the bounded
    protocol, no proxy headers unless configured...), on a loopback port in a thread; yields its URL and app."""
    from orch.api.server import OrchUvicornConfig, uvicorn_options

    app = create_app(settings)
    config = OrchUvicornConfig(app, **{**uvicorn_options(settings), "host": "127.0.0.1", "port": free_port(),
                                       **options})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive() or server.started, "uvicorn's thread ended before it started serving"
        return bool(server.started)

    wait_until(started, 60, f"uvicorn to start on port {config.port}", interval=0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """:func:`serve_app`, for a test that needs only the URL."""
    with serve_app(settings) as (url, _app):
        yield url
