"""Each core's queued and running counts as the database keeps them (``core_load``): read, and folded.

The database keeps each core's queued and running counts in ``core_load`` (migration 0011). On
PostgreSQL its triggers add a row per statement and core instead of adding to one row, so that accepts
and claims onto the same core never wait for each other's commit (nor deadlock, two batches taking
their cores' rows in different orders). A core's counts are the sum over its rows, and a read grows
with them, so :func:`fold` sums every core's rows into its ``part`` 0 row. The dispatcher and the API's
writers each fold at most once a second (:data:`FOLD_EVERY_SECONDS`,
:meth:`orch.dispatch.queue.TaskQueue.fold_load`), so either alone keeps the rows short: with 1,000
accepts a second onto one core, a read sums about a thousand small rows at most. Only committed rows
are folded, and two folders never run at once (an advisory lock, tried, not waited for): whatever
commits meanwhile is folded next time, and no row is counted twice or lost. SQLite's triggers add to
the one row directly (one writer at a time, so nothing waits), and there is nothing to fold.

Each fold leaves the rows it summed dead in the table's heap, and every read of all cores' counts (the
queue's depth) reads the heap whole. Autovacuum, when the server runs it, comes by once a minute at
most; with it off (as on this project's test machine) nothing ever did: after four minutes of 32 clients
dispatching, the table held 190 live rows and 18,865 dead ones in 850 KB. So a fold that moved rows is
followed by a ``VACUUM`` of this table alone (:func:`vacuum`), and the space is used again.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, bindparam, func, select, text

from orch.storage.models import CoreLoad

FOLD_EVERY_SECONDS = 1.0
FOLD_LOCK_KEY = 0x0_7C_4D_16  # pg_try_advisory_xact_lock key: one folder at a time
_FOLD = text("""
WITH turn AS (SELECT pg_try_advisory_xact_lock(:key) AS mine),
moved AS (DELETE FROM core_load WHERE part <> 0 AND (SELECT mine FROM turn) RETURNING core_id, queued, running)
INSERT INTO core_load (core_id, part, queued, running)
SELECT core_id, 0, sum(queued), sum(running) FROM moved GROUP BY core_id
ON CONFLICT (core_id, part) DO UPDATE
SET queued = core_load.queued + excluded.queued, running = core_load.running + excluded.running
""")


# Built once: constructing the statement per batch cost more of the API's time than running it.
# QUEUED_ON and RUNNING_ON are one core's (bind ``core_id``), to embed in a statement of the caller's.
QUEUED_ON, RUNNING_ON = (select(func.coalesce(func.sum(column), 0)).where(CoreLoad.core_id == bindparam("core_id"))
                         .scalar_subquery() for column in (CoreLoad.queued, CoreLoad.running))
# Every core's queued tasks: the queue's depth, for its limit (a sum over a row per core, and on PostgreSQL
# the rows not yet folded), where counting the queued tasks grew with the queue.
QUEUED_ALL = select(func.coalesce(func.sum(CoreLoad.queued), 0)).scalar_subquery()
_LOADS = select(CoreLoad.core_id, func.sum(CoreLoad.queued), func.sum(CoreLoad.running)).group_by(CoreLoad.core_id)
_LOADS_OF = _LOADS.where(CoreLoad.core_id.in_(bindparam("cores", expanding=True)))


def loads(connection: Connection, cores: Collection[str] | None = None) -> dict[str, tuple[int, int]]:
    """``(queued, running)`` per core of ``cores`` (all when None) that has any, summed over its rows."""
    rows = connection.execute(_LOADS) if cores is None else connection.execute(_LOADS_OF, {"cores": list(cores)})
    return {core: (int(queued), int(running)) for core, queued, running in rows if queued or running}


def vacuum(connection: Connection) -> None:
    """PostgreSQL only: reclaim the rows folds left dead, on a connection in autocommit (VACUUM runs in no
    transaction). A vacuum already running on the table (another folder's) is not waited for."""
    connection.execute(_VACUUM)


_VACUUM = text("VACUUM (SKIP_LOCKED) core_load")


def fold(connection: Connection) -> int:
    """PostgreSQL only: fold every core's rows into one, inside the caller's transaction; how many cores
    had rows to fold (0 when another folder holds the turn)."""
    return connection.execute(_FOLD, {"key": FOLD_LOCK_KEY}).rowcount
