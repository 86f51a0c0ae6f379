"""Shared fixtures: an isolated environment, one real Prefect server per session, real PostgreSQL.

Nothing here mocks ORCH or Prefect. The Prefect server is a real ``prefect server start`` on a free
loopback port with its own ``PREFECT_HOME``; PostgreSQL databases are created on the machine's server
and dropped afterwards. A PostgreSQL that cannot be reached fails the tests that need it (never skips).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import BIN, free_port

if TYPE_CHECKING:
    from sqlalchemy import URL

    from orch.config.schema import Settings

# Variables that would make a test read the developer's own setup instead of its own.
_LEAKY_ENV = [
    "ORCH_CONFIG_PATH", "ORCH_HOME", "ORCH_ENV_FILE", "ORCH_DATA_DIR", "ORCH_ENVIRONMENT", "DATABASE_URL",
    "JWT_SECRET", "WEBHOOK_SECRET", "ORCH_MCP_TOKEN", "SLACK_WEBHOOK_URL", "SMTP_SERVER", "SMTP_PORT",
    "SMTP_USERNAME", "SMTP_PASSWORD", "LOG_LEVEL", "ORCH_LOG_LEVEL", "ORCH_HOST", "ORCH_PORT",
    "PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT", "MAINTENANCE_MODE",
]
PG_ADMIN_URL = os.environ.get("ORCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFECT_AUTH_ENV = "PREFECT_API_AUTH_STRING"
# The session server's auth string: the whole suite runs against an authenticated Prefect, as `orch up` starts it.
PREFECT_AUTH_STRING = f"orch-test:{secrets.token_urlsafe(24)}"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
pytest_plugins = ["api_fixtures"]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server for the whole session; yields its API URL and exports PREFECT_API_URL.

    The server requires an auth string (PREFECT_SERVER_API_AUTH_STRING) and the test process exports it as
    PREFECT_API_AUTH_STRING, which every child a test starts from ``os.environ`` inherits: what talks to
    this server without it gets 401, so every test that uses it proves ORCH authenticates.

    Its database is a fresh PostgreSQL database, as in the production topology (docs/multi-host.md): on
    SQLite, the whole suite's flow runs share one writer, and on a loaded machine the server answered
    "database is locked" as 503 for minutes (Prefect's known pitfall, #18934), until its worker reported heal
    runs Crashed. ORCH's answer to a busy server is tested on purpose, through a fault proxy
    (test_prefect_retry.py, test_lost_heals.py), not left to chance; `orch up`'s own SQLite server is
    tested by the stack tests.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    with scratch_database("orch_prefect", "the session's Prefect server") as database_url:
        yield from _prefect_server(home, database_url.set(drivername="postgresql+asyncpg"))


def _prefect_server(home: Path, database_url: URL) -> Iterator[str]:
    """``prefect server start`` on ``database_url`` until the session ends; yields its API URL once ready."""
    import httpx

    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": api_url, "PREFECT_SERVER_API_AUTH_STRING": PREFECT_AUTH_STRING,
           PREFECT_AUTH_ENV: PREFECT_AUTH_STRING,
           "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url.render_as_string(hide_password=False),
           # Two sessions (xdist) share the machine's PostgreSQL (100 connections) with the tests' own databases.
           "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10",
           "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "5"}
    log = open(home / "server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [str(BIN / "python"), "-m", "orch.stack.prefect_cli", "server", "start", "--host", "127.0.0.1",  # as orch up
         "--port", str(port), "--analytics-off", "--no-ui"], env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api_url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        os.environ["PREFECT_API_URL"] = api_url
        os.environ["PREFECT_HOME"] = str(home)
        os.environ[PREFECT_AUTH_ENV] = PREFECT_AUTH_STRING
        if "prefect.context" in sys.modules:
            # Prefect freezes its settings when prefect.context is first imported: a test that imported Prefect
            # before this fixture first ran (any order, under xdist) would otherwise start an ephemeral server.
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        yield api_url
        # Ship what the tests' flow runs logged while the server still answers: left to the drain at exit, it
        # was retried against the closed port for a minute or more after the last test.
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, _prefect_auth_restored: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own ORCH_HOME (and CWD) with none of the developer's ORCH variables."""
    for name in _LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ORCH_HOME", str(home))
    monkeypatch.chdir(home)
    from orch.config.runtime import reset_settings_cache
    from orch.storage.engine import dispose_engines

    reset_settings_cache()
    yield home
    reset_settings_cache()
    dispose_engines()


@pytest.fixture
def _prefect_auth_restored() -> Iterator[None]:
    """Undo what ``get_settings()`` shares with Prefect's client in this process (the auth string it
    resolved, e.g. a generated one); torn down after ``monkeypatch`` (isolated_env asks for it first), so
    Prefect's settings are refreshed from the session's environment as it was, PREFECT_API_URL included."""
    before = os.environ.get(PREFECT_AUTH_ENV)
    yield
    if os.environ.get(PREFECT_AUTH_ENV) != before:
        os.environ.pop(PREFECT_AUTH_ENV, None)
        if before is not None:
            os.environ[PREFECT_AUTH_ENV] = before
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        seen = get_current_settings().api.auth_string
        if (seen.get_secret_value() if seen else None) != before:
            refresh_global_settings_context()


def _admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    from orch.storage.engine import normalise_url

    return create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")


@contextmanager
def scratch_database(prefix: str, needed_by: str) -> Iterator[URL]:
    """A new, empty PostgreSQL database on the machine's server, dropped afterwards (connections and all)."""
    from sqlalchemy import make_url, text

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine()
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for {needed_by}: {exc}")
    try:
        yield make_url(PG_ADMIN_URL).set(database=name)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the machine's server, dropped after the test."""
    with scratch_database("orch_test", "this test") as url:
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            from orch.storage.engine import dispose_engines

            dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, isolated_env: Path) -> str:
    """Run the test once on a SQLite file and once on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{isolated_env / 'data' / 'orch.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings on a migrated database (SQLite and PostgreSQL), with room for many tasks per core."""
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    loaded = load_settings(environ={"DATABASE_URL": database_url, "ORCH_HOME": "."}, generate_secrets=False)
    loaded.dispatch.core_concurrency = 100
    upgrade(loaded.database, create_database=True)
    return loaded
