"""The one database engine and session factory, for SQLite (default) and PostgreSQL.

SQLite gets WAL, ``synchronous=NORMAL``, foreign keys and a busy timeout on every connection, because
the API, the worker and the flows all write to the same file and must wait for each other rather than
fail with "database is locked".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orch.config.schema import DatabaseSettings
from orch.errors import OrchError

_engines: dict[tuple[str, int, float], Engine] = {}
_factories: dict[Engine, sessionmaker[Session]] = {}
_guard = threading.Lock()


class StorageError(OrchError):
    """A database problem a user can act on; the message is one line and names the database."""


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def normalise_url(url: str) -> URL:
    """``postgres://`` and ``postgresql://`` use psycopg2, the driver this project ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def get_engine(database: DatabaseSettings) -> Engine:
    """The process-wide engine for ``database.url`` (one pool per URL)."""
    if not database.url:
        raise StorageError("database.url is not set (load settings with orch.config.load_settings)")
    key = (database.url, database.pool_size, database.timeout)
    with _guard:
        engine = _engines.get(key)
        if engine is None:
            engine = _create(normalise_url(database.url), database)
            _engines[key] = engine
        return engine


def session_factory(database: DatabaseSettings) -> sessionmaker[Session]:
    engine = get_engine(database)
    with _guard:
        factory = _factories.get(engine)
        if factory is None:
            factory = sessionmaker(engine, expire_on_commit=False)
            _factories[engine] = factory
        return factory


@contextmanager
def session_scope(database: DatabaseSettings) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written rows."""
    session = session_factory(database)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Close every pool (tests, and before a restore swaps the database file)."""
    with _guard:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _create(url: URL, database: DatabaseSettings) -> Engine:
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _prepare_sqlite_dir(Path(url.database))
        engine = create_engine(
            url,
            connect_args={"timeout": database.timeout, "check_same_thread": False},
            pool_size=database.pool_size,
            max_overflow=database.pool_size,
            pool_timeout=database.timeout,
        )
        busy_ms = int(database.timeout * 1000)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=database.pool_size,
        max_overflow=database.pool_size,
        pool_timeout=database.timeout,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(database.timeout))},
    )


def _prepare_sqlite_dir(file: Path) -> None:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create database directory {file.parent}: {exc.strerror}") from None


def describe_error(exc: SQLAlchemyError, url: str) -> str:
    """One line for an operator: which database, and the driver's own first line of why."""
    original = getattr(exc, "orig", None) or exc
    reason = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
    return f"database {safe_url(url)}: {reason}"
