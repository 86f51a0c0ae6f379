"""Weekly database upkeep (the guide's ``scripts/maintain_database.py``) and the retention purges.

SQLite: ``ANALYZE``, ``REINDEX``, ``VACUUM``, ``PRAGMA optimize``; PostgreSQL: ``VACUUM ANALYZE``. Then
expired locks, events of long-finished tasks, monitoring samples and audit records past their retention
are deleted. Each step returns what it did, so the flow run and ``orch db maintain`` can show it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text

from orch.config.schema import Settings
from orch.dispatch.locks import LockManager
from orch.dispatch.queue import TERMINAL
from orch.storage.engine import get_engine, is_sqlite, session_scope
from orch.storage.models import AlertEvent, AuditRecord, HealRun, MonitorSample, Task, TaskEvent
from orch.storage.types import utcnow

SQLITE_STEPS = ("ANALYZE", "REINDEX", "VACUUM", "PRAGMA optimize")


def optimise(settings: Settings) -> dict[str, Any]:
    """Statistics, indexes and free space; returns the file size before and after on SQLite."""
    url = settings.database.url or ""
    started = time.monotonic()
    if is_sqlite(url):
        from orch.backup.sqlite import connect, sqlite_path

        path = sqlite_path(url)
        before = path.stat().st_size
        conn = connect(path, settings.database.timeout)
        try:
            for statement in SQLITE_STEPS:
                conn.execute(statement)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM went through the WAL; shrink it too
        finally:
            conn.close()
        return {"steps": list(SQLITE_STEPS), "size_before": before, "size_after": path.stat().st_size,
                "seconds": round(time.monotonic() - started, 3)}
    with get_engine(settings.database).connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return {"steps": ["VACUUM ANALYZE"], "seconds": round(time.monotonic() - started, 3)}


def purge(settings: Settings) -> dict[str, int]:
    """Delete what is past its retention; counts per kind. One transaction per kind, so a long purge of
    one table does not hold the write lock for all of them."""
    now = utcnow()
    removed = {"expired_locks": LockManager(settings).cleanup_expired()}
    events_cutoff = now - timedelta(days=settings.maintenance.events_retention_days)
    monitoring_cutoff = now - timedelta(seconds=settings.monitoring.metrics_retention)
    finished = select(Task.task_id).where(Task.status.in_(TERMINAL), Task.finished_at < events_cutoff)
    plans = {
        "task_events": delete(TaskEvent).where(TaskEvent.timestamp < events_cutoff, TaskEvent.task_id.in_(finished)),
        # Monitoring history shares one retention: alert changes and heal runs are read beside the samples.
        "monitor_samples": delete(MonitorSample).where(MonitorSample.timestamp < monitoring_cutoff),
        "alert_events": delete(AlertEvent).where(AlertEvent.timestamp < monitoring_cutoff),
        "heal_runs": delete(HealRun).where(HealRun.started_at < monitoring_cutoff),
        "audit_records": delete(AuditRecord).where(
            AuditRecord.timestamp < now - timedelta(days=settings.maintenance.audit_retention_days)),
    }
    for kind, statement in plans.items():
        with session_scope(settings.database, write_lock=True) as session:
            removed[kind] = int(session.execute(statement.execution_options(synchronize_session=False)).rowcount)
    return removed


def maintain(settings: Settings) -> dict[str, Any]:
    """Purge first (so VACUUM returns the space it frees), then optimise; under the database lock."""
    from orch.backup.guard import database_lock

    with database_lock(settings, "maintenance"):
        removed = purge(settings)
        return {"purged": removed, "optimised": optimise(settings)}
