"""The ``db-maintenance`` flow (weekly): the guide's ``scripts/maintain_database.py`` plus retention purges."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from orch.backup.guard import database_lock
from orch.config.runtime import get_settings
from tasks import maintenance as steps
from tasks.notify import notify_failure


@flow(name="db-maintenance")
def db_maintenance() -> dict[str, Any]:
    """Purge what is past retention, then ANALYZE/REINDEX/VACUUM/optimize, under the database lock."""
    logger = get_run_logger()
    try:
        with database_lock(get_settings(), f"maintenance:{flow_run.get_id() or 'local'}"):
            purged = steps.purge()
            optimised = steps.optimise()
    except Exception as exc:
        notify_failure("db-maintenance", exc)
        raise
    logger.info("maintenance done: purged %s; %s", purged, optimised)
    return {"purged": purged, "optimised": optimised}
