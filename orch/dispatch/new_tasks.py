"""Tasks made ready to be queued before their transaction: what accepting them needs and no lock does.

On SQLite one writer at a time holds the database (the write turn), and the API's batches and dispatch
groups queue for it with the dispatcher's claims and attempt ends. A batch of 100 held the turn for
its rows, events and audit record to be built, for the creation records' masking, and for counting
every queued and running task of its cores for the estimated wait: a count that grew with the backlog.
None of that needs the turn, so :func:`prepare` does it first: the rows, the ``task.created`` events,
the audit entry's creation records, and on SQLite the per-core counts, read in a transaction of their
own that WAL runs beside the writer. The estimate is one for the caller's planning, so counts a few
milliseconds old serve it as well. On PostgreSQL there is no turn, and the counts ride on the
statement that reads the depth and the database's clock inside the transaction (one round trip).
The API's writer of single-dispatch groups asks for no counts either (``count=False``): it prepares
each group in its one thread, where a read of its own lengthened every group's cycle.

What must be read where it is written stays in the transaction (:meth:`orch.dispatch.queue.TaskQueue.enqueue_in`):
the idempotency keys, the depth limit and, on PostgreSQL, the queue places by the database's clock.
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
from orch.dispatch.wait_estimate import CoreCounts, count_cores
from orch.storage.engine import connection_scope, is_sqlite
from orch.storage.types import utcnow

# Tasks in one accepted batch: ``POST /dispatch/batch``'s limit, the most single dispatches the API writes
# as one, and how many task ids a batch's audit entry names.
MAX_BATCH = 100


@dataclass(frozen=True)
class NewTasks:
    """``tasks`` of ``owner`` made ready: one row, one event and one creation record each, in order.
    ``counted`` is the queue per core as read before the transaction (SQLite), or None where the
    transaction counts (PostgreSQL, or when :func:`prepare` was asked for no counts)."""

    owner: str
    tasks: list[ValidTask]
    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    records: list[dict[str, Any]]
    counted: CoreCounts | None

    def only(self, keep: Collection[int]) -> NewTasks:
        """The tasks at the indexes ``keep`` (in order), with the same counts."""
        chosen = sorted(keep)
        return NewTasks(self.owner, [self.tasks[i] for i in chosen], [self.rows[i] for i in chosen],
                        [self.events[i] for i in chosen], [self.records[i] for i in chosen], self.counted)


def prepare(settings: Settings, tasks: list[ValidTask], owner: str, *, count: bool = True) -> NewTasks:
    """Rows, events and creation records for ``tasks`` (validated and authorised), and on SQLite (unless
    not ``count``) the queue of their cores as it stands. Queue places are this host's clock here; on
    PostgreSQL the transaction replaces them with the database's (:func:`orch.storage.types.clock_of_record`)."""
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
    counted = None
    if count and rows and is_sqlite(settings.database.url or ""):
        with connection_scope(settings.database) as connection:
            counted = count_cores(connection, rows)
    return NewTasks(owner, list(tasks), rows, events, creation_records(rows), counted)
