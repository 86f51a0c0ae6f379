"""Tasks made ready to be queued before their transaction: what accepting them needs and no lock does.

On SQLite one writer at a time holds the database (the write turn), and the API's batches and dispatch
groups queue for it with the dispatcher's claims and attempt ends. A batch of 100 held the turn for
its rows, events and audit record to be built and for the creation records' masking. None of that needs
the turn, so :func:`prepare` does it first: the rows, the ``task.created`` events and the audit entry's
creation records. What must be read where it is written stays in the transaction
(:meth:`orch.dispatch.queue.TaskQueue.enqueue_in`): the idempotency keys, the depth limit, the counts
for the estimated wait (kept by the database, :mod:`orch.dispatch.wait_estimate`) and, on PostgreSQL,
the queue places by the database's clock.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from uuid_utils import uuid7

from orch.config.schema import Settings
from orch.dispatch.ordering import sort_key
from orch.dispatch.request import ValidTask
from orch.dispatch.task_audit import creation_records
from orch.storage.types import utcnow

# Tasks in one accepted batch: ``POST /dispatch/batch``'s limit, the most single dispatches the API writes
# as one, and how many task ids a batch's audit entry names.
MAX_BATCH = 100


@dataclass(frozen=True)
class NewTasks:
    """``tasks`` of ``owner`` made ready: one row, one event and one creation record each, in order."""

    owner: str
    tasks: list[ValidTask]
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    records: list[dict[str, Any]]

    def only(self, keep: Collection[int]) -> NewTasks:
        """The tasks at the indexes ``keep`` (in order)."""
        chosen = sorted(keep)
        return NewTasks(self.owner, [self.tasks[i] for i in chosen], [self.rows[i] for i in chosen],
                        [self.events[i] for i in chosen], [self.records[i] for i in chosen])


def prepare(settings: Settings, tasks: list[ValidTask], owner: str) -> NewTasks:
    """Rows, events and creation records for ``tasks`` (validated and authorised). Queue places are this
    host's clock here; on PostgreSQL the transaction replaces them with the database's
    (:func:`orch.storage.types.clock_of_record`)."""
    now, epoch = utcnow(), time.time()
    aging = settings.dispatch.aging_seconds
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for task in tasks:
        row = {"task_id": str(uuid7()), "core_id": task.core_id, "action": task.action, "params": task.params,
               "priority": int(task.priority), "timeout": task.timeout, "stay": task.stay,
               "metadata": task.metadata, "owner": owner, "idempotency_key": task.idempotency_key,
               "max_retries": task.max_retries, "locks": task.locks,
               "sort_key": sort_key(epoch, task.priority, aging),
               "status": "queued", "attempts": 0, "created_at": now, "updated_at": now}
        rows.append(row)
        data = {"core_id": task.core_id, "action": task.action, "priority": task.priority.label,
                "timeout": task.timeout, "metadata": task.metadata, "owner": owner}
        events.append({"task_id": row["task_id"], "event_type": "task.created", "timestamp": now, "data": data})
    return NewTasks(owner, list(tasks), rows, events, creation_records(rows))
