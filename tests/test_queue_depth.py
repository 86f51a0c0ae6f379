"""The queue's depth row (migration 0011) stays equal to a count of the queued tasks, on SQLite and
PostgreSQL, whatever moves a task: an accept, a claim, a retry, a cancel, a reset, a delete, an operator's
SQL, concurrent writers, and a database that already held tasks when it was upgraded."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, select, text

from orch.config.schema import Settings
from orch.dispatch.errors import QueueFull
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.engine import get_engine, session_scope
from orch.storage.migrate import _alembic_config, upgrade
from orch.storage.models import QueueDepth, Task


def depth_row(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(select(QueueDepth.queued).where(QueueDepth.id == 1)) or 0)


def counted(settings: Settings) -> int:
    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(Task).where(Task.status == "queued")) or 0)


def agree(settings: Settings) -> int:
    row, count = depth_row(settings), counted(settings)
    assert row == count, f"depth row {row}, queued tasks {count}"
    return row


def put(queue: TaskQueue, **body: Any) -> dict[str, Any]:
    body = {"core_id": "WORK_AI_01", "action": "noop", **body}
    task, _ = queue.enqueue(validate(body, queue.settings), "alice")
    return task


def test_every_move_of_a_task_moves_the_depth_row(settings: Settings) -> None:
    queue = TaskQueue(settings)
    assert agree(settings) == 0
    tasks = [put(queue) for _ in range(5)]
    assert agree(settings) == 5
    batch = queue.enqueue_many([validate({"core_id": "B", "action": "noop"}, settings) for _ in range(3)], "alice")
    assert len(batch) == 3 and agree(settings) == 8

    claims = queue.claim("d1", 3)
    assert agree(settings) == 5
    queue.finish(claims[0], "completed")
    queue.finish(claims[1], "failed", error="boom")
    queue.finish(claims[2], "timed_out", error="slow")
    assert agree(settings) == 5
    queue.cancel(tasks[4]["task_id"], "alice")
    assert agree(settings) == 4
    assert sorted(queue.reset_failed("alice")) == sorted([claims[1].task_id, claims[2].task_id])
    assert agree(settings) == 6

    with get_engine(settings.database).begin() as connection:  # an operator's own SQL counts too
        connection.execute(text("UPDATE tasks SET status = 'cancelled' WHERE core_id = 'B'"))
        connection.execute(text("DELETE FROM tasks WHERE task_id = :id"), {"id": tasks[3]["task_id"]})
    assert agree(settings) == 2


def test_the_limit_is_judged_on_the_depth_row(settings: Settings) -> None:
    settings.dispatch.max_queue_depth = 3
    queue = TaskQueue(settings)
    for _ in range(3):
        put(queue)
    with pytest.raises(QueueFull):
        put(queue)
    queue.finish(queue.claim("d1", 1)[0], "completed")
    put(queue)  # room again once one left the queue
    assert agree(settings) == 3


def test_concurrent_writers_keep_it_exact_and_never_deadlock(settings: Settings) -> None:
    """Eight threads accept, claim and finish at once: every transaction commits (PostgreSQL's deferred
    triggers lock the row only at commit, so no cycle of waits) and the row ends equal to the count."""
    queue = TaskQueue(settings)

    def accept(n: int) -> None:
        for i in range(15):
            put(queue, core_id=f"C{n % 3}", idempotency_key=f"k-{n}-{i}")

    def work(n: int) -> None:
        for _ in range(15):
            for claim in queue.claim(f"d{n}", 2):
                queue.finish(claim, "completed")

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(accept, n) for n in range(5)] + [pool.submit(work, n) for n in range(3)]:
            future.result()
    assert agree(settings) == 75 - len(queue.list(status="completed", limit=100))


def test_an_upgrade_starts_the_row_at_the_queue_it_finds(database_url: str) -> None:
    from orch.config.loader import load_settings

    settings = load_settings(environ={"DATABASE_URL": database_url, "ORCH_HOME": "."}, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    queue = TaskQueue(settings)
    for _ in range(4):
        put(queue)
    queue.finish(queue.claim("d1", 1)[0], "completed")
    with get_engine(settings.database).begin() as connection:  # back to the revision before the row
        command.downgrade(_alembic_config(connection), "0010")
        assert "queue_depth" not in connection.dialect.get_table_names(connection)
    assert upgrade(settings.database).changed
    assert agree(settings) == 3
