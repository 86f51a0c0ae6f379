"""Database tasks: each is small and retried, since 'database is locked' and a restarting PostgreSQL
are transient and an hourly check should not page anyone for them."""

from __future__ import annotations

from prefect import task
from prefect.tasks import exponential_backoff

from orch.config.runtime import get_settings
from orch.storage import health

RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1), retry_jitter_factor=0.2)


@task(name="schema-revision", **RETRIES)
def schema_revision() -> dict[str, str | None]:
    """Where the schema is and where the code expects it; ``current`` is None before ``orch db init``."""
    from orch.storage.migrate import current_revision, head_revision

    database = get_settings().database
    current = current_revision(database) if health.database_file_exists(database) else None
    return {"current": current, "head": head_revision()}


@task(name="integrity-check", **RETRIES)
def integrity_check() -> str:
    """``ok`` or the damage SQLite found; a database that cannot be reached raises (and is retried)."""
    return health.integrity_check(get_settings().database)


@task(name="recent-task-count", **RETRIES)
def recent_task_count() -> int:
    return health.recent_task_count(get_settings().database)
