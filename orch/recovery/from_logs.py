"""Rebuild tasks from the JSON logs (the guide's ``scripts/data_recovery.py``), for when the database
lost them and no backup has them.

A task's creation is read from its ``task.create`` entry in the audit trail (``logging.audit_file``),
the one place every process that creates tasks (API and CLI alike) appends to: it holds each task's
core, action, priority, timeout, retries, locks, metadata, owner and params, masked by the one masking
rule (a value under a key like ``password`` is ``***``). Older ``task.created`` lines of the operational
log are still read, without params. Later ``task.*`` lines tell how far a task got.

The rebuilt tasks are always written to a dated JSON file; only with ``apply`` are the ones missing from
the database inserted. A rebuilt task whose end is not in the logs is inserted as ``failed`` ("outcome
unknown"), never re-queued by itself: whether to run it again is an operator's call (``orch tasks
reset-failed TASK_ID``). One whose params were masked in the log cannot run as it was: it is inserted
``cancelled`` (so no reset or recovery re-queues it with ``***`` for a secret), with
``metadata.recovered_params_masked`` listing the masked keys and an error saying to dispatch it again.
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
from orch.redaction import MASK
from orch.storage.engine import session_scope
from orch.storage.models import Task, TaskEvent

FINAL_EVENTS = {f"task.{status}": status for status in TERMINAL}


def default_logs(settings: Settings) -> list[Path]:
    """The audit trail (task creations), the API's log and the stack's process logs (task events), each
    with its rotations, oldest first."""
    paths: list[Path] = []
    for name in (settings.logging.audit_file, settings.logging.file):
        if name:
            main = Path(name)
            paths += [p for p in sorted(main.parent.glob(main.name + ".*"), reverse=True)
                      if not p.name.endswith(".gz")] + [main]
    paths += sorted((Path(settings.data_dir) / "logs").glob("*.log"))
    unique = list(dict.fromkeys(p.resolve() for p in paths))  # the audit file may sit in data/logs too
    return [p for p in unique if p.is_file()]


def rebuild(log_files: list[Path]) -> dict[str, dict[str, Any]]:
    """Tasks by id from ``task.create`` audit entries (and older ``task.created`` lines), with the last
    state the logs show for each."""
    tasks: dict[str, dict[str, Any]] = {}
    last: dict[str, str] = {}
    for path in log_files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict):
                    continue
                if entry.get("event_type") == "audit" and entry.get("action") == "task.create":
                    if entry.get("success", True):
                        for record in (entry.get("details") or {}).get("tasks") or []:
                            if isinstance(record, dict) and record.get("task_id"):
                                tasks[record["task_id"]] = _from_audit(record, entry, path)
                    continue
                if not str(entry.get("event_type", "")).startswith("task."):
                    continue
                task_id, kind = entry.get("task_id"), entry["event_type"]
                if not task_id:
                    continue
                data = entry.get("data") or {}
                if kind == "task.created":
                    if task_id not in tasks:  # the audit entry, when read, is the fuller record
                        tasks[task_id] = {
                            "task_id": task_id, "core_id": data.get("core_id") or entry.get("core_id"),
                            "action": data.get("action") or "external", "priority": data.get("priority", "normal"),
                            "timeout": data.get("timeout") or 300, "metadata": data.get("metadata") or {},
                            "owner": data.get("owner") or "", "created_at": entry.get("timestamp"),
                            "params": {}, "params_masked": [], "source": str(path)}
                    last.setdefault(task_id, kind)
                    continue
                last[task_id] = kind
    for task_id, task in tasks.items():
        task["last_event"] = last.get(task_id, "task.created")
    return tasks


def _from_audit(record: dict[str, Any], entry: dict[str, Any], path: Path) -> dict[str, Any]:
    params = record.get("params") if isinstance(record.get("params"), dict) else {}
    return {"task_id": record["task_id"], "core_id": record.get("core_id"),
            "action": record.get("action") or "external", "priority": record.get("priority", "normal"),
            "timeout": record.get("timeout") or 300,
            "max_retries": int(record.get("max_retries") or 0), "stay": bool(record.get("stay")),
            "locks": list(record.get("locks") or []), "metadata": record.get("metadata") or {},
            "owner": entry.get("username") or entry.get("user_id") or "", "created_at": entry.get("timestamp"),
            "params": params, "params_masked": masked_keys(params), "source": str(path)}


def masked_keys(value: Any, prefix: str = "params") -> list[str]:
    """Where ``value`` holds a masked value (``***``), as dotted paths: what cannot be restored."""
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in masked_keys(item, f"{prefix}.{key}")]
    if isinstance(value, list):
        return [path for i, item in enumerate(value) for path in masked_keys(item, f"{prefix}[{i}]")]
    return [prefix] if isinstance(value, str) and MASK in value else []


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
            "params_masked": sum(1 for t in missing if t.get("params_masked") and t["last_event"] not in FINAL_EVENTS),
            "applied": apply, "inserted": inserted}


def _insert(settings: Settings, tasks: list[dict[str, Any]]) -> int:
    from orch.audit import record_audit
    from orch.storage.types import utcnow

    now = utcnow()
    rows, events = [], []
    for task in tasks:
        created = _parse_time(task["created_at"]) or now
        priority = Priority.parse(task["priority"])
        known = task["last_event"] in FINAL_EVENTS
        masked = task.get("params_masked") or []
        metadata = {**task["metadata"], "recovered_from_logs": True}
        if known:
            status, error = FINAL_EVENTS[task["last_event"]], None
        elif masked:  # it cannot run as it was: nothing may re-queue it with *** for a secret
            status = "cancelled"
            error = (f"recovered from logs; outcome unknown (last event {task['last_event']}); params "
                     f"{', '.join(masked[:10])} were masked in the log: dispatch it again with the real values")
        else:
            status, error = "failed", f"recovered from logs; outcome unknown (last event {task['last_event']})"
        if masked:
            metadata["recovered_params_masked"] = masked
        rows.append({
            "task_id": task["task_id"], "core_id": task["core_id"] or "unknown", "action": task["action"],
            "params": task.get("params") or {}, "priority": int(priority), "timeout": int(task["timeout"]),
            "stay": task.get("stay", False), "metadata": metadata, "owner": task["owner"],
            "idempotency_key": None, "max_retries": task.get("max_retries", 0), "locks": task.get("locks", []),
            "sort_key": sort_key(created.timestamp(), priority, settings.dispatch.aging_seconds),
            "status": status, "attempts": 0, "created_at": created, "updated_at": now, "finished_at": now,
            "error": error,
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
