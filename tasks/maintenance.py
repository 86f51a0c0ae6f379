"""Database maintenance tasks: purges are retried (deleting twice deletes nothing more)."""

from __future__ import annotations

from typing import Any

from prefect import task

from orch import maintenance
from orch.config.runtime import get_settings
from tasks.db import RETRIES


@task(name="purge-past-retention", **RETRIES)
def purge() -> dict[str, int]:
    """Expired locks, old events of finished tasks, old monitoring samples, alert changes and heal runs,
    and old audit records."""
    return maintenance.purge(get_settings())


@task(name="optimise-database", **RETRIES)
def optimise() -> dict[str, Any]:
    """ANALYZE, REINDEX, VACUUM, PRAGMA optimize (SQLite) or VACUUM ANALYZE (PostgreSQL)."""
    return maintenance.optimise(get_settings())
