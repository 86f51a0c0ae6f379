"""Database health as the guide's ``scripts/health_check.py`` defines it: integrity, schema, recent work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from orch.config.schema import DatabaseSettings
from orch.storage.engine import StorageError, describe_error, get_engine, is_sqlite, safe_url
from orch.storage.models import Task
from orch.storage.types import utcnow


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


def integrity_check(database: DatabaseSettings) -> str:
    """``"ok"`` or SQLite's own description of the damage; PostgreSQL answers a round trip."""
    statement = "PRAGMA integrity_check" if is_sqlite(database.url or "") else "SELECT 'ok'"
    try:
        with get_engine(database).connect() as connection:
            rows = connection.execute(text(statement)).scalars().all()
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None
    return "ok" if rows == ["ok"] else "; ".join(str(row) for row in rows[:10])


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
            return DatabaseHealth(label, False, integrity, revision, head, None,
                                  f"integrity check failed: {integrity}")
        if revision != head:
            return DatabaseHealth(label, False, integrity, revision, head, None,
                                  f"schema at {revision}, code expects {head} (run: orch db migrate)")
        return DatabaseHealth(label, True, integrity, revision, head, recent_task_count(database))
    except StorageError as exc:
        return DatabaseHealth(label, False, "unknown", None, head, None, str(exc))


def database_file_exists(database: DatabaseSettings) -> bool:
    """False only for a SQLite file that is not there: connecting would create an empty one."""
    from pathlib import Path

    from sqlalchemy import make_url

    if not is_sqlite(database.url or ""):
        return True
    name = make_url(database.url or "").database
    return not name or name == ":memory:" or Path(name).exists()
