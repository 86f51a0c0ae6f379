"""The one database engine and session factory, for SQLite (default) and PostgreSQL.

SQLite gets WAL, ``synchronous=NORMAL``, foreign keys and a busy timeout on every connection, because
the API, the worker and the flows all write to the same file and must wait for each other rather than
fail with "database is locked".

A damaged SQLite file is remembered in a marker beside it (``<file>-corrupt``), because the file itself
cannot be trusted to say so: any statement that SQLite answers with "database disk image is malformed"
writes it, as do the start-up and sweep checks (:mod:`orch.storage.health`); a check that passes, or a
restore, removes it. A process that serves work from outside (the API) refuses writes while it is there
(:func:`refusing_writes_when_corrupt`), so no new work is accepted into a file a restore will replace.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orch.config.schema import DatabaseSettings

try:
    import fcntl
except ImportError:  # Windows: threads of one process still take turns; processes wait in SQLite
    fcntl = None  # type: ignore[assignment]
from orch.errors import OrchError
from orch.storage import json_columns

SQLITE_IMMEDIATE = "orch_sqlite_immediate"  # execution option: begin SQLite transactions IMMEDIATE
_engines: dict[tuple[str, int, float], Engine] = {}
_factories: dict[Engine, sessionmaker[Session]] = {}
_guard = threading.Lock()
_writer_turns: dict[Engine, _WriterTurn] = {}
TURN_POLL_SECONDS = 0.0002
CORRUPT_SUFFIX = "-corrupt"  # the marker beside a SQLite file known to be damaged
# SQLite's own words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB); "locked" or "busy" are not damage.
CORRUPTION_SIGNS = ("database disk image is malformed", "file is not a database")
UNREADABLE_MARKER = "damage recorded in an unreadable marker"
RECOVERY_HINT = "run: orch recover (docs/backups-and-recovery.md)"
WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLAC")  # first six letters, upper case
_refusing_writes = 0  # > 0 while a process that accepts outside work refuses it on a corrupt database


class StorageError(OrchError):
    """A database problem a user can act on; the message is one line and names the database."""

    status_code = 503
    retry_after = 5

    def http_body(self) -> dict[str, Any]:
        return {"detail": f"database unavailable: {self}"}


class DatabaseCorrupt(StorageError):
    """The database file is damaged: writing more into it would only add to what a restore loses."""

    retry_after = 300  # waits for an operator's restore, not for a busy moment to pass

    def http_body(self) -> dict[str, Any]:
        return {"detail": str(self)}  # says what it is and what to do: no "unavailable" before it

    def __init__(self, url: str | URL, problem: str) -> None:
        super().__init__(f"database is corrupt: {safe_url(url)}: {problem}; {RECOVERY_HINT}")
        self.problem = problem


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
        raise StorageError("database.url is not set (load settings with orch.config.loader.load_settings)")
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
def session_scope(database: DatabaseSettings, *, write_lock: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written rows.

    ``write_lock=True`` is for read-then-write transactions that must not interleave (claiming queued
    tasks): SQLite begins IMMEDIATE; on PostgreSQL the caller locks rows (``FOR UPDATE``) itself.
    """
    factory = session_factory(database)
    with _writer_turn(database, factory.kw["bind"], write_lock):
        session = factory()
        if write_lock:
            session.connection(execution_options={SQLITE_IMMEDIATE: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


@contextmanager
def connection_scope(database: DatabaseSettings, *, write_lock: bool = False) -> Iterator[Connection]:
    """:func:`session_scope` without the ORM: a connection in one transaction, for hot paths made of a
    Core statement or two (a webhook delivery's record), where the session's bookkeeping cost more
    than the statement. Same guarantees: commit on success, rollback on any error, writers take turns."""
    engine = get_engine(database)
    with _writer_turn(database, engine, write_lock):
        connection = engine.connect()
        if write_lock:
            connection = connection.execution_options(**{SQLITE_IMMEDIATE: True})
        try:
            with connection.begin():
                yield connection
        finally:
            connection.close()


@contextmanager
def _writer_turn(database: DatabaseSettings, engine: Engine, write_lock: bool) -> Iterator[None]:
    turn = _sqlite_writer_turn(engine) if write_lock else None
    if turn is not None and not turn.acquire(database.timeout):
        raise StorageError(f"database {safe_url(database.url or '')} is busy: no write turn within "
                           f"{database.timeout} s (database.timeout)")
    try:
        yield
    finally:
        if turn is not None:
            turn.release()


class _WriterTurn:
    """Writers of one SQLite file take turns before SQLite's own write lock: threads of this process on a
    mutex, processes on an advisory lock of ``<file>-writer.lock``.

    Without it writers contend through SQLite's busy handler, which sleeps in growing steps (1, 2, 5,
    10 ... 100 ms) instead of waking the next writer: measured, 48 ms per dispatch at 4 concurrent
    clients in one process against 3 ms alone, and a p95 of 50 ms for webhooks with two API workers.
    The file lock is polled every :data:`TURN_POLL_SECONDS` up to the timeout (``flock`` cannot wait
    with one), a far shorter wait than the busy handler's. SQLite's locking still decides; writers
    that take no turn (plain sessions) simply wait for it as before. Re-entrant within a thread.
    """

    def __init__(self, path: Path | None) -> None:
        self._mutex = threading.RLock()
        self._path = path
        self._fd: int | None = None
        self._pid = 0
        self._depth = 0  # read and written only by the thread holding the mutex

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._mutex.acquire(timeout=timeout):
            return False
        self._depth += 1
        if self._depth > 1 or self._path is None or fcntl is None:
            return True
        fd = self._file()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._depth -= 1
                    self._mutex.release()
                    return False
                time.sleep(TURN_POLL_SECONDS)

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None and fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked child must not share the parent's lock
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)  # type: ignore[arg-type]
            self._pid = os.getpid()
        return self._fd


def _sqlite_writer_turn(engine: Engine) -> _WriterTurn | None:
    if engine.dialect.name != "sqlite":
        return None
    turn = _writer_turns.get(engine)
    if turn is None:
        with _guard:
            name = engine.url.database
            path = Path(f"{name}-writer.lock") if name and name != ":memory:" else None
            turn = _writer_turns.setdefault(engine, _WriterTurn(path))
    return turn


def serialise(session: Session, key: int) -> None:
    """Make this write transaction wait for any other that took ``key``, until that one ends.

    For a read-then-write that must not interleave with another of its kind, where there may be no row
    to lock yet: two sweeps both found no row for a new alert and both inserted one, and the second
    failed on the unique key. PostgreSQL: a transaction-level advisory lock. SQLite: the session's write
    turn (``write_lock=True``) already serialises its writers, so nothing is done."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_ADVISORY_LOCK, {"key": key})


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def corruption_marker(url: str | URL) -> Path | None:
    """Where the damage of a SQLite file is recorded; None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(f"{parsed.database}{CORRUPT_SUFFIX}")


def corruption_record(url: str | URL) -> dict[str, Any] | None:
    """The marker's fields (``problem``, ``found_by``, ``at``, and ``notified_at`` once the critical alert was
    sent from it), or None when no damage is known; an unreadable marker is damage without details.

    A file read, not a query: the database it describes cannot be trusted to answer."""
    marker = corruption_marker(url)
    if marker is None:
        return None
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        found = None
    return found if isinstance(found, dict) else {"problem": UNREADABLE_MARKER}


def known_corruption(url: str | URL) -> str | None:
    """The recorded damage of this database (one line), or None when none is known."""
    found = corruption_record(url)
    if found is None:
        return None
    if found.get("problem") == UNREADABLE_MARKER:
        return UNREADABLE_MARKER
    return (f"{found.get('problem', 'damage recorded')} "
            f"(found by {found.get('found_by', '?')} at {found.get('at', '?')})")


def mark_corrupt(url: str | URL, problem: str, found_by: str) -> None:
    """Record the damage beside the file; best effort (a read-only directory must not hide the error).

    Damage already recorded keeps when and by whom it was first found (and when it was notified): the
    alert built from the marker fires once, at that time; only the description is replaced (a check's
    says more than a statement's)."""
    found = corruption_record(url)
    if found is None or found.get("problem") == UNREADABLE_MARKER:
        found = {"found_by": found_by, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    found["problem"] = problem.splitlines()[0][:500] if problem else "damaged"
    _write_marker(url, found)


def note_corruption_notified(url: str | URL, at: datetime) -> None:
    """Remember in the marker when its critical alert was last sent, so every process reminds at the same pace."""
    found = corruption_record(url)
    if found is not None:
        _write_marker(url, {**found, "notified_at": at.isoformat(timespec="seconds")})


def _write_marker(url: str | URL, found: dict[str, Any]) -> None:
    marker = corruption_marker(url)
    if marker is None:
        return
    try:
        temporary = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps(found) + "\n", encoding="utf-8")
        os.replace(temporary, marker)
    except OSError:
        pass


def clear_corruption(url: str | URL) -> bool:
    """Forget recorded damage (a check passed, or a good copy was restored); True when there was some."""
    marker = corruption_marker(url)
    if marker is None:
        return False
    try:
        marker.unlink()
    except FileNotFoundError:
        return False
    return True


def is_corruption_error(exc: BaseException) -> bool:
    """SQLite said the file is damaged (not merely busy or locked); ORCH's own refusals are not news."""
    original = getattr(exc, "orig", None) or exc
    return not isinstance(original, OrchError) and any(sign in str(original) for sign in CORRUPTION_SIGNS)


@contextmanager
def refusing_writes_when_corrupt() -> Iterator[None]:
    """While open, this process's writes to a database with recorded damage raise :class:`DatabaseCorrupt`
    before they reach it (reads still answer, for what can be read).

    For the processes that accept work from outside (the API): the monitoring sweep and recovery keep
    writing, since they are how the damage is reported and repaired."""
    global _refusing_writes
    with _guard:
        _refusing_writes += 1
    try:
        yield
    finally:
        with _guard:
            _refusing_writes -= 1


def dispose_engines() -> None:
    """Close every pool (tests, and before a restore swaps the database file)."""
    with _guard:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()
        for turn in _writer_turns.values():
            turn.close()
        _writer_turns.clear()


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _create(url: URL, database: DatabaseSettings) -> Engine:
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _prepare_sqlite_dir(Path(url.database))
        engine = create_engine(
            url,
            connect_args={"timeout": database.timeout, "check_same_thread": False},
            json_serializer=json_columns.dumps,
            pool_size=database.pool_size,
            max_overflow=database.pool_size,
            pool_timeout=database.timeout,
        )
        busy_ms = int(database.timeout * 1000)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            # SQLAlchemy's recipe: let SQLAlchemy, not the driver, emit BEGIN, so reads are inside the
            # transaction too and a writer can take the write lock up front (see _begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            # Statement journals (and temporary tables) in memory, not in a temporary file: every row a
            # batch inserts into tasks (whose trigger keeps core_load) or task_events (a foreign key) is a
            # statement that may abort after writing, so SQLite journals the pages it changes, and in a file
            # that was a third of a batch's write (scripts/bench_dispatch.py). VACUUM (orch.maintenance)
            # uses a connection of its own, so its copy of the database still goes to a file.
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:  # type: ignore[no-untyped-def]
            # BEGIN IMMEDIATE takes the write lock at the start: a read-then-write transaction (a queue
            # claim) then waits its turn instead of failing with "database is locked" at its first write.
            immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        marker = str(corruption_marker(url) or "")

        @event.listens_for(engine, "before_cursor_execute")
        def _refuse_when_corrupt(_connection, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            # A flag test per statement; a stat() per write only in a refusing process (the API).
            if _refusing_writes and marker and _is_write(statement) and os.path.exists(marker):
                raise DatabaseCorrupt(url, known_corruption(url) or "damage recorded")

        @event.listens_for(engine, "handle_error")
        def _remember_corruption(context) -> None:  # type: ignore[no-untyped-def]
            # Whichever process meets the damage first tells all the others, through the marker; a
            # check's description (which page, how many problems) is more useful than SQLite's one line.
            if is_corruption_error(context.original_exception) and known_corruption(url) is None:
                mark_corrupt(url, str(context.original_exception), "a statement")

        return engine
    return create_engine(
        url,
        # An ORM flush of many rows' changes (a claim's tasks, a group of attempt ends) is an executemany
        # of UPDATEs, which psycopg2 sends one statement and one round trip per row; execute_batch sends
        # them together. Nothing here reads the row count of an executemany.
        executemany_mode="values_plus_batch",
        json_serializer=json_columns.dumps,
        pool_size=database.pool_size,
        max_overflow=database.pool_size,
        pool_timeout=database.timeout,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, int(database.timeout)), "options": _server_limits(database)},
    )


def _server_limits(database: DatabaseSettings) -> str:
    """Session settings that bound what a lost client holds on the PostgreSQL server: a session idle in a
    transaction is ended after ``idle_transaction_timeout`` (a frozen process's socket still answers TCP
    keepalives), and keepalives every 5 s after 10 s idle find a host whose link is gone (3 misses)."""
    millis = int(database.idle_transaction_timeout * 1000)
    return (f"-c idle_in_transaction_session_timeout={millis} -c tcp_keepalives_idle=10 "
            "-c tcp_keepalives_interval=5 -c tcp_keepalives_count=3")


def _is_write(statement: str) -> bool:
    """A statement that changes the file; BEGIN IMMEDIATE is a write transaction starting."""
    head = statement.lstrip()[:15].upper()
    return head[:6] in WRITE_STATEMENTS or head == "BEGIN IMMEDIATE"


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
