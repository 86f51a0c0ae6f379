"""What is ahead of tasks being queued, and how long they should wait: the ``estimated_wait_seconds`` a
new task is answered with, and the cache of each core's typical task duration it is made from.

:func:`work_ahead` is read once per enqueue, before the insert, and serves three ends: the depth limit
(:class:`orch.dispatch.errors.QueueFull`), the new tasks' queue places on PostgreSQL (the database's
clock comes back with the counts) and the estimate. Accepting a task is a handful of statements, so the
single-task case uses statements built once, and typical durations are remembered for
:data:`TYPICAL_TTL_SECONDS` (they move slowly) instead of being read per task."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, bindparam, cast, func, literal_column, select

from orch.storage.models import Task
from orch.storage.types import DATABASE_NOW, reads_database_clock

TYPICAL_TTL_SECONDS = 30.0
_TYPICAL: dict[str, tuple[float, float]] = {}  # core -> (recent typical task duration, when measured)


@dataclass(frozen=True)
class WorkAhead:
    """What is in the queue when tasks are added: the depth as far as the limit needs it (see
    :func:`work_ahead`), queued/running per core, and (on PostgreSQL) the database's clock in epoch
    seconds, which the new tasks' sort keys are made from."""

    depth: int | None
    queued: dict[str, int]
    running: dict[str, int]
    epoch: float | None = None


# The depth limit needs the queued tasks counted only one past the limit: counting a million-deep queue
# exactly was 42 ms of every accept (scripts/bench_queue_scale.py), the count up to 10,000 is 0.4 ms.
_QUEUE_DEPTH = select(func.count()).select_from(
    select(literal_column("1")).select_from(Task).where(Task.status == "queued").limit(bindparam("cap")).subquery())
# SQLite: rowids are distinct positive integers, and ORCH never chooses them, so the tasks table never holds
# more rows than its largest rowid, which SQLite reads off the end of the table at once. While that bound
# plus the new tasks is within the limit, nothing needs counting at all.
_MOST_ROWS = select(func.max(literal_column("rowid"))).select_from(Task)
_CORE = bindparam("core_id")
_QUEUE_STATE_ONE = select(  # built once: constructing the expression cost as much as running it
    _MOST_ROWS.scalar_subquery(),
    select(func.count()).select_from(Task).where(Task.core_id == _CORE, Task.status == "queued",
                                                 Task.sort_key < bindparam("sort_key")).scalar_subquery(),
    select(func.count()).select_from(Task).where(Task.core_id == _CORE, Task.status == "running").scalar_subquery(),
)
# PostgreSQL: the same, with the queue place taken by the database's clock, which comes back too. An
# enqueuer's own clock would let a host running behind put its tasks ahead of everyone else's.
_EPOCH = cast(func.extract("epoch", DATABASE_NOW), Float)
_QUEUE_STATE_ONE_DB_CLOCK = select(
    _QUEUE_DEPTH.scalar_subquery(),
    select(func.count()).select_from(Task).where(Task.core_id == _CORE, Task.status == "queued",
                                                 Task.sort_key < _EPOCH - bindparam("advance")).scalar_subquery(),
    select(func.count()).select_from(Task).where(Task.core_id == _CORE, Task.status == "running").scalar_subquery(),
    _EPOCH,
)


def work_ahead(connection: Connection, rows: list[dict[str, Any]], aging_seconds: float, limit: int) -> WorkAhead:
    """Before ``rows`` are inserted: the queue depth as far as the depth ``limit`` needs it, and per core of
    ``rows`` the tasks queued and running there. A single task (the common case) uses a statement built
    once, whose per-core count stops at the new task's place in the queue. On PostgreSQL the same
    statement reads the database's clock for the new tasks' places: no round trip of its own.

    The depth is None when the tasks cannot reach the limit (SQLite: the table has too few rows), else the
    queued tasks counted up to ``limit`` + 1: exact up to the limit, ``limit + 1`` meaning "more"."""
    db_clock = reads_database_clock(connection)
    cap = {"cap": limit + 1}
    if len(rows) == 1:
        row = rows[0]
        if db_clock:
            advance = int(row["priority"]) * aging_seconds
            depth, queued, running, epoch = connection.execute(
                _QUEUE_STATE_ONE_DB_CLOCK, {"core_id": row["core_id"], "advance": advance, **cap}).one()
            return WorkAhead(depth, {row["core_id"]: queued}, {row["core_id"]: running}, epoch)
        most, queued, running = connection.execute(
            _QUEUE_STATE_ONE, {"core_id": row["core_id"], "sort_key": row["sort_key"]}).one()
        return WorkAhead(_depth_beyond(connection, most, 1, limit), {row["core_id"]: queued},
                         {row["core_id"]: running})
    cores = sorted({row["core_id"] for row in rows})
    epoch = None
    if db_clock:
        depth, epoch = connection.execute(select(_QUEUE_DEPTH.scalar_subquery(), _EPOCH), cap).one()
    else:
        depth = _depth_beyond(connection, connection.execute(_MOST_ROWS).scalar(), len(rows), limit)
    queued: dict[str, int] = {}
    running: dict[str, int] = {}
    for core, status, count in connection.execute(select(Task.core_id, Task.status, func.count()).where(
            Task.core_id.in_(cores), Task.status.in_(("queued", "running"))).group_by(Task.core_id, Task.status)):
        (running if status == "running" else queued)[core] = count
    return WorkAhead(depth, queued, running, epoch)


def _depth_beyond(connection: Connection, most_rows: int | None, adding: int, limit: int) -> int | None:
    """SQLite: None while the table's row bound plus ``adding`` is within ``limit``, else the count up to it."""
    if (most_rows or 0) + adding <= limit:
        return None
    return int(connection.execute(_QUEUE_DEPTH, {"cap": limit + 1}).scalar_one())


def estimated_waits(connection: Connection, rows: list[dict[str, Any]], ahead: WorkAhead,
                    core_limit: Callable[[str], int]) -> dict[str, float]:
    """Seconds until each new task should start: the tasks ahead of it on its core (and those
    running there) divided among the core's slots (``core_limit``), times the core's recent task
    duration. An estimate for the caller's planning, not a promise: higher priorities may still
    overtake. For a batch, tasks already queued on a core count as ahead of all of the batch, and the
    batch's own tasks as ahead of the later ones."""
    waits: dict[str, float] = {}
    seen: Counter[str] = Counter()
    for row in rows:
        core = row["core_id"]
        before = ahead.queued.get(core, 0) + seen[core]
        seen[core] += 1
        slots = core_limit(core)
        busy = before + ahead.running.get(core, 0)
        if busy < slots:
            waits[row["task_id"]] = 0.0
            continue
        rounds = (busy - slots) // slots + 1
        waits[row["task_id"]] = round(rounds * typical_duration(connection, core), 3)
    return waits


def typical_duration(connection: Connection, core_id: str, default: float = 1.0) -> float:
    """The mean of the core's last 20 completed tasks, remembered for :data:`TYPICAL_TTL_SECONDS`."""
    cached = _TYPICAL.get(core_id)
    now = time.monotonic()
    if cached and now - cached[1] < TYPICAL_TTL_SECONDS:
        return cached[0]
    recent = connection.execute(select(Task.started_at, Task.finished_at).where(
        Task.core_id == core_id, Task.status == "completed", Task.started_at.is_not(None))
        .order_by(Task.finished_at.desc()).limit(20)).all()
    durations = [(end - start).total_seconds() for start, end in recent if end and start]
    typical = sum(durations) / len(durations) if durations else default
    _TYPICAL[core_id] = (typical, now)
    return typical
