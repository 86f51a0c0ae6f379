"""Rebuild tasks from the JSON logs (the guide's ``scripts/data_recovery.py``), for when the database
lost them and no backup has them.

Every ``task.created`` line holds the task's core, action, priority, timeout, metadata and owner; later
lines for the same task tell how far it got. The rebuilt tasks are always written to a dated JSON file;
only with ``apply`` are the ones missing from the database inserted. A rebuilt task whose end is not in
the logs is inserted as ``failed`` ("outcome unknown"), never re-queued by itself: whether to run it
again is an operator's call (``orch tasks reset-failed TASK_ID``). Params are not logged (they may hold
secrets), so they come back empty.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from orch.config.schema import Settings
from orch.dispatch.ordering import Priority, sort_key
from orch.dispatch.queue import TERMINAL
from orch.storage.engine import session_scope
from orch.storage.models import Task, TaskEvent

FINAL_EVENTS = {f"task.{status}": status for status in TERMINAL}


def default_logs(settings: Settings) -> list[Path]:
    """The API's log (and its rotations) and the stack's process logs, where task events are written."""
    paths: list[Path] = []
    if settings.logging.file:
        main = Path(settings.logging.file)
        paths += sorted(main.parent.glob(main.name + ".*"), reverse=True) + [main]
    paths += sorted((Path(settings.data_dir) / "logs").glob("*.log"))
    return [p for p in paths if p.is_file()]


def rebuild(log_files: list[Path]) -> dict[str, dict[str, Any]]:
    """Tasks by id from ``task.created`` lines, with the last state the logs show for each."""
    tasks: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    for path in log_files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or not str(entry.get("event_type", "")).startswith("task."):
                    continue
                task_id, kind = entry.get("task_id"), entry["event_type"]
                if not task_id:
                    continue
                data = entry.get("data") or {}
                if kind == "task.created":
                    tasks[task_id] = {
                        "task_id": task_id, "core_id": data.get("core_id") or entry.get("core_id"),
                        "action": data.get("action") or "external", "priority": data.get("priority", "normal"),
                        "timeout": data.get("timeout") or 300, "metadata": data.get("metadata") or {},
                        "owner": data.get("owner") or "", "created_at": entry.get("timestamp"),
                        "source": str(path)}
                last[task_id] = kind
    for task_id, task in tasks.items():
        task["last_event"] = last.get(task_id, "task.created")
    return tasks


def recover(settings: Settings, *, apply: bool = False, log_files: list[Path] | None = None) -> dict[str, Any]:
    """Write the rebuilt tasks to ``<data_dir>/recovered_tasks_<stamp>.json``; with ``apply``, insert the
    missing ones (one transaction, each with a ``task.recovered`` event)."""
    files = log_files if log_files is not None else default_logs(settings)
    tasks = rebuild(files)
    with session_scope(settings.database) as session:
        present = set(session.scalars(select(Task.task_id).where(Task.task_id.in_(list(tasks))))) if tasks else set()
    for task in tasks.values():
        task["missing_from_database"] = task["task_id"] not in present
    missing = [t for t in tasks.values() if t["missing_from_database"]]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    out = Path(settings.data_dir) / f"recovered_tasks_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(list(tasks.values()), indent=2, default=str), encoding="utf-8")
    os.replace(partial, out)
    inserted = _insert(settings, missing) if apply and missing else 0
    return {"logs": [str(p) for p in files], "found": len(tasks), "missing": len(missing), "file": str(out),
            "applied": apply, "inserted": inserted}


def _insert(settings: Settings, tasks: list[dict[str, Any]]) -> int:
    from orch.audit import record_audit
    from orch.storage.types import utcnow

    now = utcnow()
    rows, events = [], []
    for task in tasks:
        created = _parse_time(task["created_at"]) or now
        priority = Priority.parse(task["priority"])
        status = FINAL_EVENTS.get(task["last_event"], "failed")
        known = task["last_event"] in FINAL_EVENTS
        rows.append({
            "task_id": task["task_id"], "core_id": task["core_id"] or "unknown", "action": task["action"],
            "params": {}, "priority": int(priority), "timeout": int(task["timeout"]), "stay": False,
            "metadata": {**task["metadata"], "recovered_from_logs": True}, "owner": task["owner"],
            "idempotency_key": None, "max_retries": 0, "locks": [],
            "sort_key": sort_key(created.timestamp(), priority, settings.dispatch.aging_seconds),
            "status": status, "attempts": 0, "created_at": created, "updated_at": now, "finished_at": now,
            "error": None if known else f"recovered from logs; outcome unknown (last event {task['last_event']})",
        })
        events.append({"task_id": task["task_id"], "event_type": "task.recovered", "timestamp": now,
                       "data": {"source": task["source"], "last_event": task["last_event"]}})
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(insert(Task.__table__), rows)
        session.execute(insert(TaskEvent.__table__), events)
        record_audit(session, actor="recovery", action="task.recover", resource="task",
                     details={"count": len(rows), "task_ids": [r["task_id"] for r in rows][:100]})
    return len(rows)


def _parse_time(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
