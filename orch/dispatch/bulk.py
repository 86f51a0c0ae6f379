"""Cancel or retry many tasks at once (``POST /tasks/bulk``, the console's bulk actions).

Every task changes exactly as its single-task move would (same event, one audit entry of its own), all in
one transaction; a task the move does not apply to is reported with the reason instead of failing the lot.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.dispatch.queue import RETRYABLE, TaskQueue
from orch.dispatch.task_filter import TaskFilter
from orch.storage.engine import session_scope
from orch.storage.models import Task

BulkOp = Literal["cancel", "retry"]
MAX_BULK = 1000
CANCELLABLE = ("queued", "running")
_ELIGIBLE = {"cancel": CANCELLABLE, "retry": RETRYABLE}
_REFUSAL = {"cancel": "only queued or running tasks are cancelled",
            "retry": "only failed or timed-out tasks are retried"}


def bulk_change(settings: Settings, op: BulkOp, actor: str, caller: Caller | None = None, *,
                task_ids: list[str] | None = None, task_filter: TaskFilter | None = None,
                limit: int = MAX_BULK) -> dict[str, Any]:
    """Apply ``op`` to the tasks named by ``task_ids`` or, newest first, to up to ``limit`` matching
    ``task_filter``. A filter without a status means the tasks ``op`` can change (cancel: queued and
    running; retry: failed and timed-out), so ``limit`` is not used up by tasks that would be skipped;
    a filter with a status takes it as given and reports the tasks it cannot change."""
    if (task_ids is None) == (task_filter is None):
        raise ValueError("give exactly one of task_ids and task_filter")
    queue = TaskQueue(settings)
    changed: list[str] = []
    skipped: list[dict[str, str]] = []
    with session_scope(settings.database, write_lock=True) as session:
        if task_ids is not None:
            wanted = list(dict.fromkeys(task_ids))[:MAX_BULK]
            found = {t.task_id: t for t in session.scalars(
                select(Task).where(Task.task_id.in_(wanted)).order_by(Task.task_id).with_for_update())}
            picked: list[Task | str] = [found.get(i, i) for i in wanted]
        else:
            assert task_filter is not None
            query = task_filter.apply(select(Task))
            if task_filter.status is None:
                query = query.where(Task.status.in_(_ELIGIBLE[op]))
            newest = list(session.scalars(query.with_only_columns(Task.task_id)
                                          .order_by(Task.created_at.desc(), Task.task_id).limit(limit)))
            # Locked in task id order, as every statement locking several running tasks locks them (a
            # dispatcher's grouped attempt ends among them): on PostgreSQL, newest first could deadlock.
            # A task that stopped matching meanwhile is left out, as the locking statement re-checks it.
            locked = {task.task_id: task for task in session.scalars(
                query.where(Task.task_id.in_(newest)).order_by(Task.task_id).with_for_update())}
            picked = [locked[task_id] for task_id in newest if task_id in locked]
        for task in picked:
            if isinstance(task, str):
                skipped.append({"task_id": task, "reason": "no such task"})
            elif task.status not in _ELIGIBLE[op]:
                skipped.append({"task_id": task.task_id, "reason": f"{task.status}: {_REFUSAL[op]}"})
            elif op == "cancel":
                queue.cancel_in(session, task, actor, caller)
                changed.append(task.task_id)
            else:
                queue.requeue_in(session, task, actor)
                _audit_retry(session, actor, task.task_id, caller)
                changed.append(task.task_id)
    matched = sum(not isinstance(task, str) for task in picked)
    return {"op": op, "matched": matched, "changed": changed, "skipped": skipped}


def _audit_retry(session: Session, actor: str, task_id: str, caller: Caller | None) -> None:
    """The entry ``POST /tasks/{id}/retry`` writes for one task."""
    caller = caller or Caller()
    record_audit(session, actor=actor, action="task.retry", resource="task", resource_id=task_id,
                 ip_address=caller.ip_address, user_agent=caller.user_agent,
                 details={"count": 1, "task_ids": [task_id]})

