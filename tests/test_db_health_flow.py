"""The ``db-health`` flow on the real Prefect server: Completed when healthy, Failed with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from orch.config.runtime import get_settings
from orch.storage.migrate import head_revision, upgrade


@pytest.fixture
def flow_env(prefect_server: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return database_url


def test_healthy_database_completes_with_a_report(flow_env: str) -> None:
    from flows.db_health import db_health

    upgrade(get_settings().database)
    state = db_health(return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert report["integrity"] == "ok" and report["recent_tasks"] == 0
    assert report["schema"] == {"current": head_revision(), "head": head_revision()}
    assert report["prefect"]["ready"] is True


def test_uninitialised_database_fails_and_says_what_to_do(flow_env: str) -> None:
    from flows.db_health import db_health

    state = db_health(return_state=True)
    assert state.is_failed()
    assert "database is not initialised (run: orch db init)" in state.message


def test_missing_sqlite_file_is_not_created_by_the_check(prefect_server: str, isolated_env: Path) -> None:
    from flows.db_health import db_health

    assert db_health(return_state=True).is_failed()
    assert not (isolated_env / "data" / "orch.db").exists()
