"""the queue's depth kept in one row by triggers on tasks, so an accept need not count the queue

Every accept checks ``dispatch.max_queue_depth`` against the number of queued tasks. Counting them scanned
the whole queue: 49.5 ms per accept with a million queued, 2.6 ms with none (scripts/bench_queue_scale.py).
The row starts at today's count and every insert, delete or status change of a task moves it.

SQLite: ordinary row triggers (writers take turns on the whole file, so the row adds no waiting).
PostgreSQL: constraint triggers deferred to commit. A transaction then takes the row's lock only as it
commits, after every other lock it needed, so waiting on the row can never close a deadlock cycle with a
task row or an idempotency key another transaction holds; the lock is held only for the commit.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER tasks_queue_depth_insert AFTER INSERT ON tasks WHEN NEW.status = 'queued'
       BEGIN UPDATE queue_depth SET queued = queued + 1 WHERE id = 1; END""",
    """CREATE TRIGGER tasks_queue_depth_delete AFTER DELETE ON tasks WHEN OLD.status = 'queued'
       BEGIN UPDATE queue_depth SET queued = queued - 1 WHERE id = 1; END""",
    """CREATE TRIGGER tasks_queue_depth_update AFTER UPDATE OF status ON tasks
       WHEN (OLD.status = 'queued') != (NEW.status = 'queued')
       BEGIN UPDATE queue_depth SET queued = queued + (CASE WHEN NEW.status = 'queued' THEN 1 ELSE -1 END)
             WHERE id = 1; END""",
)

_POSTGRESQL_FUNCTION = """
CREATE FUNCTION orch_queue_depth_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.status = 'queued') THEN
        UPDATE queue_depth SET queued = queued + 1 WHERE id = 1;
    ELSE
        UPDATE queue_depth SET queued = queued - 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$"""
_POSTGRESQL_TRIGGERS = (
    """CREATE CONSTRAINT TRIGGER tasks_queue_depth_insert AFTER INSERT ON tasks DEFERRABLE INITIALLY DEFERRED
       FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION orch_queue_depth_moved()""",
    """CREATE CONSTRAINT TRIGGER tasks_queue_depth_delete AFTER DELETE ON tasks DEFERRABLE INITIALLY DEFERRED
       FOR EACH ROW WHEN (OLD.status = 'queued') EXECUTE FUNCTION orch_queue_depth_moved()""",
    """CREATE CONSTRAINT TRIGGER tasks_queue_depth_update AFTER UPDATE OF status ON tasks
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
       WHEN ((OLD.status = 'queued') IS DISTINCT FROM (NEW.status = 'queued'))
       EXECUTE FUNCTION orch_queue_depth_moved()""",
)
_TRIGGER_NAMES = ("tasks_queue_depth_insert", "tasks_queue_depth_delete", "tasks_queue_depth_update")


def upgrade() -> None:
    op.create_table('queue_depth',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('queued', sa.Integer(), nullable=False),
                    sa.PrimaryKeyConstraint('id'))
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        op.execute("LOCK TABLE tasks IN SHARE MODE")  # no task moves between the count and the triggers
    op.execute("INSERT INTO queue_depth (id, queued) SELECT 1, count(*) FROM tasks WHERE status = 'queued'")
    if postgresql:
        op.execute(_POSTGRESQL_FUNCTION)
    for statement in _POSTGRESQL_TRIGGERS if postgresql else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in _TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {name} ON tasks" if postgresql else f"DROP TRIGGER {name}")
    if postgresql:
        op.execute("DROP FUNCTION orch_queue_depth_moved()")
    op.drop_table('queue_depth')
