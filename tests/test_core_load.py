"""The per-core counts the database keeps (``core_load``, migration 0011) against the tasks themselves.

The estimated wait of a new task reads them instead of counting its core's queue on every accept. They
are kept by triggers, so every path that moves a task (accept, claim, end, cancel, hand back, reset,
a lapsed lease, a plain SQL statement, a delete) must leave them equal to a count of the tasks, on
both databases, with PostgreSQL's per-statement rows folded or not.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, text, update

from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.dispatch.wait_estimate import BEHIND_CAP
from orch.storage.engine import session_scope
from orch.storage.models import CoreLoad, Task
from orch.storage.types import utcnow

CORES = ("WORK_AI_01", "WORK_AI_02", "WORK_AI_03")


def kept(settings: Settings) -> dict[str, tuple[int, int]]:
    """The counts as ``core_load`` holds them: (queued, running) per core with any."""
    with session_scope(settings.database) as session:
        rows = session.execute(select(CoreLoad.core_id, func.sum(CoreLoad.queued), func.sum(CoreLoad.running))
                               .group_by(CoreLoad.core_id)).all()
    return {core: (int(queued), int(running)) for core, queued, running in rows if queued or running}


def counted(settings: Settings) -> dict[str, tuple[int, int]]:
    """The same, counted from the tasks."""
    out: dict[str, list[int]] = {}
    with session_scope(settings.database) as session:
        for core, status, count in session.execute(select(Task.core_id, Task.status, func.count())
                                                   .where(Task.status.in_(("queued", "running")))
                                                   .group_by(Task.core_id, Task.status)):
            out.setdefault(core, [0, 0])[status == "running"] += count
    return {core: (queued, running) for core, (queued, running) in out.items()}


def agree(settings: Settings, queue: TaskQueue) -> dict[str, tuple[int, int]]:
    """Kept equals counted, before and after a fold (PostgreSQL), which leaves one row per core."""
    truth = counted(settings)
    assert kept(settings) == truth
    queue.fold_load()
    assert kept(settings) == truth
    with session_scope(settings.database) as session:
        rows = session.execute(select(CoreLoad.core_id, func.count()).group_by(CoreLoad.core_id)).all()
    assert all(count == 1 for _core, count in rows), rows
    return truth


def batch(queue: TaskQueue, cores: list[str], **body: Any) -> list[dict[str, Any]]:
    tasks = [validate({"core_id": core, "action": "noop", **body}, queue.settings) for core in cores]
    return [view for view, _created in queue.enqueue_many(tasks, "alice")]


def test_every_move_of_a_task_keeps_the_counts(settings: Settings) -> None:
    settings.dispatch.core_concurrency = 2
    queue = TaskQueue(settings)
    assert agree(settings, queue) == {}
    made = batch(queue, [CORES[n % 3] for n in range(12)])
    queue.enqueue(validate({"core_id": CORES[0], "action": "noop"}, settings), "bob")
    assert agree(settings, queue) == {CORES[0]: (5, 0), CORES[1]: (4, 0), CORES[2]: (4, 0)}

    claims = queue.claim("d1", 4)
    assert len(claims) == 4
    agree(settings, queue)
    assert queue.finish(claims[0], "completed") and queue.finish(claims[1], "failed", error="no")
    queue.cancel(claims[2].task_id, "alice")  # running, cancelled
    queue.cancel(made[-1]["task_id"], "alice")  # queued, cancelled
    agree(settings, queue)
    assert queue.hand_back("d1", [claims[3].task_id], "stopping") == 1
    assert queue.reset_failed("alice") == [claims[1].task_id]
    agree(settings, queue)

    lapsed = queue.claim("d2", 2)
    with session_scope(settings.database) as session:  # their leases lapse; the next claim finds them
        session.execute(update(Task).where(Task.task_id.in_([c.task_id for c in lapsed]))
                        .values(lease_expires_at=utcnow() - timedelta(minutes=5)))
    agree(settings, queue)
    queue.claim("d3", 1)
    agree(settings, queue)

    with session_scope(settings.database) as session:  # what no ORCH code does, the database still counts
        session.execute(update(Task).where(Task.core_id == CORES[1], Task.status == "queued")
                        .values(core_id="WORK_AI_09"))
        session.execute(text("DELETE FROM tasks WHERE core_id = :core AND status = 'queued'"), {"core": CORES[2]})
    truth = agree(settings, queue)
    assert CORES[1] not in truth and truth["WORK_AI_09"][0] > 0


def test_concurrent_statements_each_count_once(settings: Settings) -> None:
    """Accepts from several threads onto the same cores, claims and a fold between them: no count is
    lost or taken twice (PostgreSQL adds a row per statement, never waiting on another's)."""
    from concurrent.futures import ThreadPoolExecutor

    queue = TaskQueue(settings)

    def accept(_n: int) -> None:
        for _round in range(5):
            batch(queue, [CORES[n % 3] for n in range(10)])
            queue.fold_load()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(accept, range(4)))
    assert agree(settings, queue) == {CORES[0]: (80, 0), CORES[1]: (60, 0), CORES[2]: (60, 0)}


def test_a_single_task_counts_only_those_ahead_of_its_place(settings: Settings) -> None:
    """An urgent task onto a queue of normal ones waits for none of them; past BEHIND_CAP tasks behind
    it the ones ahead are counted instead, with the same answer. (Cores of their own: no task has ended
    there, so each waits the default 1 s.)"""
    deep, deeper = "DEEP_01", "DEEP_02"
    settings.dispatch.core_concurrency = 1
    settings.dispatch.aging_seconds = 3600.0  # an hour per priority step: the urgent task goes first
    queue = TaskQueue(settings)
    for _round in range(3):
        batch(queue, [deep] * 100)
    urgent = queue.enqueue(validate({"core_id": deep, "action": "noop", "priority": "critical"}, settings),
                           "alice")[0]
    assert urgent["estimated_wait_seconds"] == 0.0
    normal = queue.enqueue(validate({"core_id": deep, "action": "noop"}, settings), "alice")[0]
    assert normal["estimated_wait_seconds"] == 301.0  # 301 ahead, one slot, 1 s each (no history yet)
    batch(queue, [deeper] * 2, priority="critical")
    for _round in range(BEHIND_CAP // 100 + 1):
        batch(queue, [deeper] * 100, priority="low")
    past_cap = queue.enqueue(validate({"core_id": deeper, "action": "noop", "priority": "critical"}, settings),
                             "alice")[0]
    assert past_cap["estimated_wait_seconds"] == 2.0  # the two critical ones ahead, none of the low ones


def test_an_upgrade_counts_the_tasks_already_there(database_url: str) -> None:
    """A database upgraded with a backlog (migration 0011): the counts start equal to the tasks, queued
    and running ones counted, ended ones not, on both databases."""
    from alembic import command

    from orch.config.loader import load_settings
    from orch.storage.engine import get_engine
    from orch.storage.migrate import _alembic_config, upgrade

    settings = load_settings(environ={"DATABASE_URL": database_url, "ORCH_HOME": "."}, generate_secrets=False)
    with get_engine(settings.database).begin() as connection:
        command.upgrade(_alembic_config(connection), "0010")
    statuses = ["queued"] * 5 + ["running"] * 2 + ["completed", "failed", "cancelled"]
    with get_engine(settings.database).begin() as connection:
        connection.execute(Task.__table__.insert(), [
            {"task_id": f"00000000-0000-0000-0000-{n:012d}", "core_id": CORES[n % 2], "action": "noop",
             "params": {}, "priority": 1, "timeout": 60, "stay": False, "metadata": {}, "owner": "alice",
             "max_retries": 0, "locks": [], "sort_key": float(n), "status": status, "attempts": 0,
             "created_at": utcnow(), "updated_at": utcnow()} for n, status in enumerate(statuses)])
    upgrade(settings.database)
    assert kept(settings) == counted(settings) == {CORES[0]: (3, 1), CORES[1]: (2, 1)}
    agree(settings, TaskQueue(settings))


def test_on_postgresql_the_rows_a_fold_leaves_dead_are_reclaimed(pg_url: str) -> None:
    """Every read of the queue's depth reads ``core_load`` whole, and each fold leaves the rows it summed
    dead. Autovacuum is off on this machine's server (as it may be on an operator's), and nothing
    reclaimed them: the table grew with every statement that moved a task. A fold now vacuums it, so
    rounds of accepts and folds reuse its space instead of adding to it."""
    from orch.config.loader import load_settings
    from orch.storage.migrate import upgrade

    settings = load_settings(environ={"DATABASE_URL": pg_url, "ORCH_HOME": "."}, generate_secrets=False)
    settings.dispatch.core_concurrency = 100
    upgrade(settings.database, create_database=True)
    queue = TaskQueue(settings)

    def pages() -> int:
        with session_scope(settings.database) as session:
            return int(session.scalar(text(
                "SELECT pg_relation_size('core_load') / current_setting('block_size')::int")))

    sizes = []
    for _round in range(12):
        for first in (0, 100):  # a row per core for the fold to sum, and leave dead
            batch(queue, [f"WORK_AI_{core:03d}" for core in range(first, first + 100)])
        assert queue.fold_load() == 200
        sizes.append(pages())
    assert sizes[-1] <= sizes[1] + 1, sizes  # without: grew by the same pages every round
    assert agree(settings, queue) == {f"WORK_AI_{core:03d}": (12, 0) for core in range(200)}
