"""What is ahead of tasks being queued, and how long they should wait: the ``estimated_wait_seconds`` a
new task is answered with, and the cache of each core's typical task duration it is made from.

:func:`work_ahead` is read once per enqueue, in its transaction before the insert, and serves three
ends: the depth limit (:class:`orch.dispatch.errors.QueueFull`), the new tasks' queue places on
PostgreSQL (the database's clock comes back with the counts) and the estimate. The estimate's per-core
counts are read from ``core_load``, which the database keeps as tasks move (migration 0011): counting a
core's queue on every accept grew with its backlog (3.4-4x the empty queue's accept with 100,000 queued
on the core, scripts/bench_queue_scale.py). Accepting a task is a handful of statements, so the
single-task case uses statements built once, and typical durations are remembered for
:data:`TYPICAL_TTL_SECONDS` (they move slowly) instead of being read per task."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, bindparam, cast, func, literal_column, select

from orch.dispatch.core_load import QUEUED_ALL, QUEUED_ON, RUNNING_ON, loads
from orch.storage.models import Task
from orch.storage.types import DATABASE_NOW, reads_database_clock

TYPICAL_TTL_SECONDS = 30.0
_TYPICAL: dict[str, tuple[float, float]] = {}  # core -> (recent typical task duration, when measured)


@dataclass(frozen=True)
class CoreCounts:
    """Tasks queued ahead and running, per core of the tasks being queued (see :func:`work_ahead`)."""

    queued: dict[str, int]
    running: dict[str, int]


@dataclass(frozen=True)
class WorkAhead:
    """What is in the queue when tasks are added: its depth (see :func:`work_ahead`), the counts per
    core, and (on PostgreSQL) the database's clock in epoch seconds, which the new tasks' sort keys are
    made from."""

    depth: int
    counts: CoreCounts
    epoch: float | None = None


# The depth, for its limit, is the sum of the counts core_load keeps. Counting the queued tasks, even only
# up to one past the limit, read as many rows as were queued, up to the limit, once per group of accepts:
# on PostgreSQL that count was 17 % of the API's group writer's time with some thousands queued
# (py-spy, 32 clients sending single dispatches while the dispatcher ran).
_QUEUE_DEPTH = select(QUEUED_ALL)
_CORE = bindparam("core_id")
# A single task counts only the tasks ahead of its own place: the core's queued tasks less those behind
# it. A new task usually goes last, so those are few, and they are counted only up to BEHIND_CAP; past
# that (an urgent task onto a deep queue of lower priorities) the tasks ahead are counted instead.
BEHIND_CAP = 1000
_QUEUED_ON_CORE = (Task.core_id == _CORE, Task.status == "queued")


def _behind(place: Any) -> Any:
    """The queued tasks of the core at or after ``place`` in its queue, counted up to :data:`BEHIND_CAP`."""
    return select(func.count()).select_from(select(literal_column("1")).select_from(Task).where(
        *_QUEUED_ON_CORE, Task.sort_key >= place).limit(BEHIND_CAP).subquery()).scalar_subquery()


_SORT_KEY = bindparam("sort_key")
_CORE_ONE = select(QUEUED_ON, RUNNING_ON, _behind(_SORT_KEY))
_AHEAD_ONE = select(func.count()).select_from(Task).where(*_QUEUED_ON_CORE, Task.sort_key < _SORT_KEY)
# PostgreSQL: the depth, the counts and the database's clock in one statement, the queue place taken by
# that clock. An enqueuer's own clock would let a host running behind put its tasks ahead of everyone else's.
_EPOCH = cast(func.extract("epoch", DATABASE_NOW), Float)
_PLACE = _EPOCH - bindparam("advance")
_QUEUE_STATE_ONE_DB_CLOCK = select(QUEUED_ALL, QUEUED_ON, RUNNING_ON, _behind(_PLACE), _EPOCH)
_DEPTH_DB_CLOCK = select(QUEUED_ALL, _EPOCH)  # a batch's: its per-core counts are read by count_cores


def count_cores(connection: Connection, rows: list[dict[str, Any]]) -> CoreCounts:
    """Per core of ``rows``: the tasks queued there ahead of them and those running. A single task (the
    common case) counts only the tasks ahead of its own place, by a statement built once; for a batch,
    every task queued on its cores counts as ahead of all of it."""
    if len(rows) == 1:
        core, place = rows[0]["core_id"], rows[0]["sort_key"]
        queued, running, behind = connection.execute(_CORE_ONE, {"core_id": core, "sort_key": place}).one()
        return CoreCounts({core: _ahead(connection, core, place, queued, behind)}, {core: int(running)})
    counts = CoreCounts({}, {})
    for core, (queued, running) in loads(connection, {row["core_id"] for row in rows}).items():
        counts.queued[core], counts.running[core] = queued, running
    return counts


def _ahead(connection: Connection, core: str, place: float, queued: int, behind: int) -> int:
    """The queued tasks ahead of ``place`` on ``core``: all ``queued`` less those ``behind`` it, or,
    when those reached the cap, counted one by one."""
    if behind < BEHIND_CAP:
        return int(queued) - behind
    return int(connection.execute(_AHEAD_ONE, {"core_id": core, "sort_key": place}).scalar_one())


def work_ahead(connection: Connection, rows: list[dict[str, Any]], aging_seconds: float) -> WorkAhead:
    """Inside the transaction that inserts ``rows``: the queue's depth (exact: the counts are kept in the
    same transactions as the tasks) and the counts per core. On PostgreSQL the depth, the counts of a
    single task and the database's clock for the new tasks' places come back in one round trip."""
    if not reads_database_clock(connection):
        return WorkAhead(int(connection.execute(_QUEUE_DEPTH).scalar_one()), count_cores(connection, rows))
    if len(rows) == 1:
        row = rows[0]
        core, advance = row["core_id"], int(row["priority"]) * aging_seconds
        depth, queued, running, behind, epoch = connection.execute(_QUEUE_STATE_ONE_DB_CLOCK, {
            "core_id": core, "advance": advance}).one()
        ahead = _ahead(connection, core, epoch - advance, queued, behind)
        return WorkAhead(int(depth), CoreCounts({core: ahead}, {core: int(running)}), epoch)
    depth, epoch = connection.execute(_DEPTH_DB_CLOCK).one()
    return WorkAhead(int(depth), count_cores(connection, rows), epoch)


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
        before = ahead.counts.queued.get(core, 0) + seen[core]
        seen[core] += 1
        slots = core_limit(core)
        busy = before + ahead.counts.running.get(core, 0)
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
