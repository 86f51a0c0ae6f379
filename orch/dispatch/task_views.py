"""Tasks and their events as the CLI, the API and the console show them: one plain-dict shape for all.

The queue hands these out instead of ORM rows so no caller depends on a session still being open, and so a
task reads the same whichever door it came through (priority by name, times in ISO-8601)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from orch.dispatch.ordering import Priority
from orch.storage.models import Task, TaskEvent


def task_view(task: Task) -> dict[str, Any]:
    """The task as the CLI and API show it."""
    return {
        "task_id": task.task_id, "core_id": task.core_id, "action": task.action, "params": task.params,
        "priority": Priority(task.priority).label, "timeout": task.timeout, "stay": task.stay,
        "metadata": task.meta, "locks": task.locks, "idempotency_key": task.idempotency_key,
        "owner": task.owner, "max_retries": task.max_retries, "status": task.status,
        "attempts": task.attempts, "result": task.result, "error": task.error,
        "created_at": iso(task.created_at), "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at), "updated_at": iso(task.updated_at),
    }


def view_of_row(row: dict[str, Any]) -> dict[str, Any]:
    """The view of a row just inserted with Core (column ``metadata`` is attribute ``meta``): accepting a
    task skips the ORM, so there is no ``Task`` object to show."""
    return task_view(SimpleNamespace(**row, meta=row["metadata"], result=None, error=None,  # type: ignore[arg-type]
                                     started_at=None, finished_at=None))


def event_view(event: TaskEvent) -> dict[str, Any]:
    """One entry of a task's history (``GET /jobs/{id}/events``, ``orch task events``)."""
    return {"event_id": event.event_id, "event_type": event.event_type, "timestamp": iso(event.timestamp),
            "data": event.data}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
