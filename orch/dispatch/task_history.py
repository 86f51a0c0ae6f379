"""A task's history: the ``task_events`` row and the JSON log line each status move writes.

The queue writes the event in the same transaction as the move (:mod:`orch.dispatch.queue`), so the
history can never disagree with the state; the log line is what the guide's log analysis and
``orch recover tasks-from-logs`` read when the database is gone, so it is written only once the
transaction has committed (:mod:`orch.storage.committed`): a move that was rolled back (a failed commit, a
group of attempt ends written again one by one) never happened and is not logged."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.orm import Session

from orch.logging_config import get_logger
from orch.storage.committed import after_commit
from orch.storage.models import Task, TaskEvent
from orch.storage.types import utcnow

log = get_logger(__name__)
# A Core insert: an event is written once and never read back in its transaction as an object, and the ORM's
# unit of work for it was a third of the cost of a claim's or an attempt end's commit.
_INSERT_EVENT = insert(TaskEvent.__table__)
# Each task's latest ``task.started`` event; built once, since an attempt's end reads it once per task.
_LATEST_STARTED = select(TaskEvent).where(TaskEvent.event_id.in_(
    select(func.max(TaskEvent.event_id)).where(TaskEvent.task_id.in_(bindparam("task_ids", expanding=True)),
                                               TaskEvent.event_type == "task.started").group_by(TaskEvent.task_id)))


Move = tuple[Task, str, dict[str, Any], "datetime | None"]  # a task, its event type, data, and when (None: now)


def add_event(session: Session, task: Task, event_type: str, data: dict[str, Any], at: datetime | None = None) -> None:
    """Record the move in ``task_events`` and in the log. ``at``: the clock of record's time of the move,
    for an attempt's start and end, whose difference is its duration (default: this host's clock)."""
    add_events(session, [(task, event_type, data, at)])


def add_events(session: Session, moves: list[Move]) -> None:
    """Record several tasks' moves (:func:`add_event`) with one statement.

    A claim or a group of attempt ends moves many tasks in one transaction, and wrote their events one
    insert at a time; each insert first flushed the task changed just before it, so a claim of four tasks
    cost four flushes and eight statements. With the changes made first and the events written after,
    the tasks' updates go in one flush. All of this is done holding SQLite's write turn, which the API's
    dispatches wait for (issue 17)."""
    if not moves:
        return
    now = utcnow()
    session.execute(_INSERT_EVENT, [{"task_id": task.task_id, "event_type": event_type, "data": data,
                                     "timestamp": at or now} for task, event_type, data, at in moves])
    after_commit(session, functools.partial(_log_moves, [(event_type, task.task_id, task.core_id, data)
                                                         for task, event_type, data, _at in moves]))


def _log_moves(lines: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    for line in lines:
        log_event(*line)


def note_task_runs(session: Session, task_runs: dict[str, str]) -> None:
    """Put each Prefect task run id on its task's latest ``task.started`` event, once.

    The claim writes that event before Prefect names the run, so the id rides on the next write the
    attempt makes anyway (a lease renewal or its end) instead of costing a transaction per task."""
    if not task_runs:
        return
    for started in session.scalars(_LATEST_STARTED, {"task_ids": list(task_runs)}):
        if "task_run_id" not in started.data:
            started.data = {**started.data, "task_run_id": task_runs[started.task_id]}


def log_event(event_type: str, task_id: str, core_id: str, data: dict[str, Any]) -> None:
    """One JSON line (``event_type``, ``task_id``, ``data``) for each move after creation: what the
    guide's log analysis and ``orch recover tasks-from-logs`` read to tell how far a task got.

    A task's creation is not logged here but in its ``task.create`` audit entry
    (:func:`orch.dispatch.task_audit.creation_records`): the operational log is written only by the API
    process, so tasks queued from the CLI never reached it, while the audit trail (``logging.audit_file``)
    is appended by every process that creates tasks, and only once the creating transaction has committed."""
    if log.isEnabledFor(logging.INFO):
        log.info(event_type, extra={"event_type": event_type, "task_id": task_id, "core_id": core_id,
                                    "data": data})
