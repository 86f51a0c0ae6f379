"""Database health as the guide's ``scripts/health_check.py`` defines it: integrity, schema, recent work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from orch.config.schema import DatabaseSettings
from orch.storage.engine import (
    StorageError,
    clear_corruption,
    describe_error,
    get_engine,
    is_corruption_error,
    is_sqlite,
    mark_corrupt,
    safe_url,
)
from orch.storage.models import Task
from orch.storage.types import utcnow

CHECK_MAX_ERRORS = 10  # integrity_check(N) / quick_check(N) stop after N problems: a wrecked file is no slower


@dataclass(frozen=True)
class DatabaseHealth:
    database: str
    healthy: bool
    integrity: str
    schema_revision: str | None
    schema_head: str
    recent_tasks: int | None
    problem: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def summary(self) -> str:
        if self.healthy:
            return f"Database healthy - {self.recent_tasks} tasks in last hour"
        return f"Database unhealthy - {self.problem}"


def integrity_check(database: DatabaseSettings, *, quick: bool = False) -> str:
    """``"ok"`` or SQLite's own description of the damage (one line); PostgreSQL answers a round trip.

    ``quick`` is ``PRAGMA quick_check``: every page is read once, but indexes are not matched against
    their tables, so it is linear in the file's size (integrity_check is O(N log N)) and cheap enough
    for every monitoring sweep and every start (docs/benchmarks.md
    has the measured cost). A file SQLite cannot even read as a database is a verdict too, not an error.
    """
    pragma = "quick_check" if quick else "integrity_check"
    statement = f"PRAGMA {pragma}({CHECK_MAX_ERRORS})" if is_sqlite(database.url or "") else "SELECT 'ok'"
    try:
        with get_engine(database).connect() as connection:
            rows = connection.execute(text(statement)).scalars().all()
    except SQLAlchemyError as exc:
        if is_corruption_error(exc):
            return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(describe_error(exc, database.url or "")) from None
    if rows == ["ok"]:
        return "ok"
    problems = [line.strip() for row in rows for line in str(row).splitlines()
                if line.strip() and not line.startswith("*** in database")]
    if len(problems) <= 1:
        return problems[0] if problems else "damaged"
    more = f"{len(problems) - 1}{'+' if len(problems) >= CHECK_MAX_ERRORS else ''}"
    return f"{problems[0]} (and {more} more problem(s))"


def check_corruption(database: DatabaseSettings, found_by: str) -> str | None:
    """The damage ``PRAGMA quick_check`` finds (None when the file is sound), remembered for every process.

    The marker beside the file (:func:`orch.storage.engine.mark_corrupt`) is what ``/health`` reports and
    what makes the API refuse writes; a check that passes removes it, so a restored file, or a false
    alarm, is trusted again at the next check. PostgreSQL: no check (None). A cluster made with
    ``initdb --data-checksums`` verifies each page as it reads it; amcheck would need an extension
    installed by a superuser and a scan of every index, more than a sweep should cost.
    Raises :class:`StorageError` when the database does not answer at all (``database_up`` says so).
    """
    if not is_sqlite(database.url or "") or not database_file_exists(database):
        return None
    verdict = integrity_check(database, quick=True)
    if verdict == "ok":
        clear_corruption(database.url or "")
        return None
    mark_corrupt(database.url or "", verdict, found_by)
    return verdict


def ping(database: DatabaseSettings) -> None:
    """The cheap liveness check for frequent probes: the database answers and holds ORCH's schema.
    (``integrity_check`` reads the whole SQLite file: right for the hourly check, not for every probe.)"""
    try:
        with get_engine(database).connect() as connection:
            connection.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None


def recent_task_count(database: DatabaseSettings, within: timedelta = timedelta(hours=1)) -> int:
    try:
        with get_engine(database).connect() as connection:
            since = utcnow() - within
            return int(connection.execute(
                select(func.count()).select_from(Task).where(Task.created_at > since)).scalar_one())
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None


def check_database(database: DatabaseSettings) -> DatabaseHealth:
    """Every check in one report; never raises for a database problem, it reports it."""
    from orch.storage.migrate import current_revision, head_revision

    head = head_revision()
    label = safe_url(database.url or "")
    if not database_file_exists(database):
        return DatabaseHealth(label, False, "missing", None, head, None,
                              "database file not found (run: orch db init)")
    try:
        revision = current_revision(database)
        if revision is None:
            return DatabaseHealth(label, False, "unknown", None, head, None,
                                  "database is not initialised (run: orch db init)")
        integrity = integrity_check(database)
        if integrity != "ok":
            mark_corrupt(database.url or "", integrity, "the integrity check")
            return DatabaseHealth(label, False, integrity, revision, head, None,
                                  f"integrity check failed: {integrity}")
        clear_corruption(database.url or "")  # the whole file was read and is sound: writes may resume
        if revision != head:
            return DatabaseHealth(label, False, integrity, revision, head, None,
                                  f"schema at {revision}, code expects {head} (run: orch db migrate)")
        return DatabaseHealth(label, True, integrity, revision, head, recent_task_count(database))
    except StorageError as exc:
        return DatabaseHealth(label, False, "unknown", None, head, None, str(exc))


# A table's storage parameter that turns autovacuum off for it, as PostgreSQL accepts a boolean.
_OFF = ("false", "off", "no", "0", "f", "n")
_READ_AUTOVACUUM = text("SELECT current_setting('autovacuum'), current_setting('track_counts')")
_TABLE_OPTIONS = text("SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.reloptions IS NOT NULL")


def autovacuum_problem(database: DatabaseSettings) -> str | None:
    """Why PostgreSQL would not vacuum ORCH's tables by itself, or None (and None on SQLite).

    Every claim and end of a task rewrites its row, so ``tasks``, ``task_events`` and ``core_load`` collect
    dead rows at the dispatch rate; without autovacuum they keep them until ``orch maintenance`` vacuums
    (weekly by default), and the tables and their indexes grow with every task run meanwhile (a server
    with ``autovacuum = off`` held 10,781 dead rows in ``tasks`` after minutes of dispatching). ORCH
    vacuums ``core_load`` after each fold; the rest is autovacuum's work."""
    if is_sqlite(database.url or ""):
        return None
    from orch.storage.models import Base

    try:
        with get_engine(database).connect() as connection:
            autovacuum, track_counts = connection.execute(_READ_AUTOVACUUM).one()
            tables = [name for name, options in connection.execute(_TABLE_OPTIONS)
                      if name in Base.metadata.tables and any(
                          option.partition("=")[0] == "autovacuum_enabled"
                          and option.partition("=")[2].lower() in _OFF for option in options)]
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None
    causes = []
    if autovacuum != "on":
        causes.append("the server runs with autovacuum = off")
    elif track_counts != "on":
        causes.append("the server runs with track_counts = off, which autovacuum needs")
    if tables:
        causes.append(f"autovacuum_enabled = false on {', '.join(sorted(tables))}")
    if not causes:
        return None
    return (f"PostgreSQL does not vacuum ORCH's tables by itself ({'; '.join(causes)}): dead rows of every task "
            "move stay in them until `orch maintenance` runs, and the tables grow meanwhile. Set autovacuum = on "
            "(and track_counts = on) in postgresql.conf, or ALTER TABLE ... RESET (autovacuum_enabled)")


def database_file_exists(database: DatabaseSettings) -> bool:
    """False only for a SQLite file that is not there: connecting would create an empty one."""
    from pathlib import Path

    from sqlalchemy import make_url

    if not is_sqlite(database.url or ""):
        return True
    name = make_url(database.url or "").database
    return not name or name == ":memory:" or Path(name).exists()
