"""The audit entries of task changes: who created, cancelled, retried or reported on which tasks.

Each entry is written in the transaction of the change it records (:func:`orch.audit.record_audit`), so
an entry exists exactly when the change committed. A creation's entry also carries what rebuilds the
tasks (:func:`creation_records`): the one record of a task's creation outside the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.dispatch.ordering import Priority
from orch.redaction import redact_records

_USERS_FIELDS = ("params", "metadata", "locks")  # what a caller wrote freely


def audit_task_change(session: Session, actor: str, action: str, task_id: str | None, caller: Caller | None,
                      details: dict[str, Any]) -> None:
    """Audit ``action`` by ``actor`` on ``task_id`` (None for a batch: its ids are in ``details``)."""
    caller = caller or Caller()
    record_audit(session, actor=actor, action=action, resource="task", resource_id=task_id,
                 ip_address=caller.ip_address, user_agent=caller.user_agent, details=details)


def creation_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What rebuilds each created task (``orch recover tasks-from-logs``), for its ``task.create`` audit entry.

    The one record of a task's creation outside the database, whether the API or the CLI queued it.
    Params, metadata and lock names pass the one masking rule first: a value under a key such as
    ``password`` is ``***`` here, in the audit table and in the file alike, and comes back masked. The
    other fields are ORCH's own ids, validated identifiers and numbers."""
    return redact_records([
        {"task_id": row["task_id"], "core_id": row["core_id"], "action": row["action"],
         "priority": Priority(row["priority"]).label, "timeout": row["timeout"], "max_retries": row["max_retries"],
         "stay": row["stay"], "locks": row["locks"], "metadata": row["metadata"], "params": row["params"]}
        for row in rows], _USERS_FIELDS)
