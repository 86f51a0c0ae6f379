"""The guide's database health check (``scripts/health_check.py``) as a scheduled flow."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks import db, prefect_server


class DatabaseUnhealthy(RuntimeError):
    """Raised so the run ends Failed: Prefect shows it red and failure notifications fire."""


@flow(name="db-health")
def db_health() -> dict[str, Any]:
    """Schema revision, integrity check, tasks created in the last hour, and Prefect readiness."""
    logger = get_run_logger()
    prefect = prefect_server.readiness()
    schema = db.schema_revision()
    if schema["current"] is None:
        raise DatabaseUnhealthy("database is not initialised (run: orch db init)")
    integrity = db.integrity_check()
    recent = db.recent_task_count() if integrity == "ok" else None

    problems = []
    if integrity != "ok":
        problems.append(f"integrity check failed: {integrity}")
    if schema["current"] != schema["head"]:
        problems.append(f"schema at {schema['current']}, code expects {schema['head']} (run: orch db migrate)")
    if not prefect["ready"]:
        problems.append(f"Prefect server not ready: {prefect['problem']}")
    if problems:
        raise DatabaseUnhealthy("; ".join(problems))
    logger.info("Database healthy - %s tasks in last hour", recent)
    return {"integrity": integrity, "schema": schema, "recent_tasks": recent, "prefect": prefect}
