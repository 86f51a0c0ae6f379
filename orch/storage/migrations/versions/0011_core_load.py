"""each core's queued and running tasks, kept by the database as tasks move

The estimated wait of a new task counted the tasks queued on its core (and running there) on every
accept: with 100,000 queued on one core that count was most of the accept (3.4-4x the empty queue,
scripts/bench_queue_scale.py). ``core_load`` holds the counts instead, and triggers keep them on every
insert, status move and delete of a task, whichever code (or SQL) makes it. SQLite keeps one row per core
(``part`` 0), added to in the trigger: one writer at a time, so nothing waits. PostgreSQL's triggers add
one row per statement and core (``part`` from a sequence), because one row per core would make
concurrent accepts onto the same core wait for each other (and could deadlock two batches); the rows are
folded into ``part`` 0 now and then (:func:`orch.dispatch.core_load.fold`). The counts are the sums over
a core's rows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# SQLite: a task that arrives at queued or running adds to its core's one row; one that leaves takes away.
_COUNT_IN = """BEGIN
        INSERT INTO core_load (core_id, part, queued, running)
        VALUES (NEW.core_id, 0, NEW.status = 'queued', NEW.status = 'running')
        ON CONFLICT (core_id, part) DO UPDATE
        SET queued = queued + excluded.queued, running = running + excluded.running;
    END"""
_COUNT_OUT = """BEGIN
        UPDATE core_load SET queued = queued - (OLD.status = 'queued'), running = running - (OLD.status = 'running')
        WHERE core_id = OLD.core_id AND part = 0;
    END"""
_MOVED = "(OLD.status IS NOT NEW.status OR OLD.core_id IS NOT NEW.core_id)"
_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER tasks_load_insert AFTER INSERT ON tasks WHEN NEW.status IN ('queued', 'running') {_COUNT_IN}",
    f"CREATE TRIGGER tasks_load_leave AFTER UPDATE OF status, core_id ON tasks "
    f"WHEN OLD.status IN ('queued', 'running') AND {_MOVED} {_COUNT_OUT}",
    f"CREATE TRIGGER tasks_load_enter AFTER UPDATE OF status, core_id ON tasks "
    f"WHEN NEW.status IN ('queued', 'running') AND {_MOVED} {_COUNT_IN}",
    f"CREATE TRIGGER tasks_load_delete AFTER DELETE ON tasks WHEN OLD.status IN ('queued', 'running') {_COUNT_OUT}",
]

# One function for the three statement triggers: the rows a statement added count up, the rows it
# removed count down, per core; a statement that moved nothing between queued, running and the rest
# (a lease renewal, a result written) adds no row.
_PG_FUNCTION = """
CREATE FUNCTION core_load_delta() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO core_load (core_id, part, queued, running)
        SELECT core_id, nextval('core_load_part'), count(*) FILTER (WHERE status = 'queued'),
               count(*) FILTER (WHERE status = 'running')
        FROM added WHERE status IN ('queued', 'running') GROUP BY core_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO core_load (core_id, part, queued, running)
        SELECT core_id, nextval('core_load_part'), -count(*) FILTER (WHERE status = 'queued'),
               -count(*) FILTER (WHERE status = 'running')
        FROM removed WHERE status IN ('queued', 'running') GROUP BY core_id;
    ELSE
        INSERT INTO core_load (core_id, part, queued, running)
        SELECT core_id, nextval('core_load_part'), sum(queued), sum(running) FROM (
            SELECT core_id, (status = 'queued')::int AS queued, (status = 'running')::int AS running
            FROM added WHERE status IN ('queued', 'running')
            UNION ALL
            SELECT core_id, -(status = 'queued')::int, -(status = 'running')::int
            FROM removed WHERE status IN ('queued', 'running')
        ) AS moves GROUP BY core_id HAVING sum(queued) <> 0 OR sum(running) <> 0;
    END IF;
    RETURN NULL;
END
$$"""
_PG_TRIGGERS = [
    "CREATE TRIGGER tasks_load_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION core_load_delta()",
    "CREATE TRIGGER tasks_load_update AFTER UPDATE ON tasks REFERENCING OLD TABLE AS removed NEW TABLE AS added "
    "FOR EACH STATEMENT EXECUTE FUNCTION core_load_delta()",
    "CREATE TRIGGER tasks_load_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS removed "
    "FOR EACH STATEMENT EXECUTE FUNCTION core_load_delta()",
]


def upgrade() -> None:
    op.create_table('core_load',
    sa.Column('core_id', sa.String(length=64), nullable=False),
    sa.Column('part', sa.BigInteger(), nullable=False),
    sa.Column('queued', sa.BigInteger(), nullable=False),
    sa.Column('running', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('core_id', 'part')
    )
    op.execute("INSERT INTO core_load (core_id, part, queued, running) "
               "SELECT core_id, 0, sum(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), "
               "sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END) "
               "FROM tasks WHERE status IN ('queued', 'running') GROUP BY core_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE core_load_part MINVALUE 1")
        op.execute(_PG_FUNCTION)
        statements = _PG_TRIGGERS
    else:
        statements = _SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in ("tasks_load_insert", "tasks_load_update", "tasks_load_leave", "tasks_load_enter",
                 "tasks_load_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON tasks" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS core_load_delta()")
        op.execute("DROP SEQUENCE IF EXISTS core_load_part")
    op.drop_table('core_load')
