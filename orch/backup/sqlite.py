"""SQLite copies through SQLite itself: the online backup API in both directions.

Why the backup API for the restore swap too, rather than renaming a file over the live one: the API,
the dispatcher and flow runs keep connections open to ``orch.db``. A renamed file would leave them
writing to the old, unlinked inode, and a stale ``orch.db-wal`` beside a new ``orch.db`` can be replayed
into it. Copying *into* the live database is one SQLite write transaction: atomic, it waits for other
writers like any write, and every open connection sees the restored content on its next read.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from orch.backup.files import BackupError, disk_errors, remove_quietly, sql_identifier


def sqlite_path(url: str) -> Path:
    name = make_url(url).database
    if not name or name == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(name)


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """A plain connection to an existing file (connecting to a missing one would create it)."""
    if not path.exists():
        raise BackupError(f"database file {path} not found")
    return sqlite3.connect(str(path), timeout=timeout, isolation_level=None)


def copy(source: Path, target: Path, timeout: float) -> None:
    """Copy ``source`` into ``target`` in one step: a consistent snapshot of ``source`` (WAL readers do
    not block writers, so the system keeps running) written as one transaction on ``target``."""
    started = time.monotonic()

    def give_up_when_busy(status: int, _remaining: int, _total: int) -> None:
        # The target's busy timeout has already waited; the API would otherwise retry forever.
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() - started > timeout:
            raise BackupError(f"{target} stayed locked by another writer for {timeout:g} s")

    src = connect(source, timeout)
    try:
        dst = sqlite3.connect(str(target), timeout=timeout, isolation_level=None)
        try:
            with disk_errors(target):
                src.backup(dst, pages=-1, progress=give_up_when_busy)
        except sqlite3.Error as exc:
            raise BackupError(f"copying {source.name} into {target}: {exc}") from None
        finally:
            dst.close()
    finally:
        src.close()


def remove_files(path: Path) -> None:
    """A database file and the journal files SQLite may have left beside it."""
    remove_quietly(*(path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")))


def tables(path: Path, timeout: float = 30) -> set[str]:
    conn = connect(path, timeout)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path.name} is not a readable SQLite database ({exc})") from None
    finally:
        conn.close()


def restored_facts(path: Path, timeout: float) -> dict[str, Any]:
    """After a swap: the live database answers at the expected revision. Not another integrity check:
    the pages are the ones the candidate's full check passed, copied in one SQLite transaction, and a
    check of 1 GB would add seconds to every restore's downtime for nothing it could find."""
    conn = connect(path, timeout)
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return {"integrity": str(exc), "schema_revision": None, "row_counts": {}}
    finally:
        conn.close()
    return {"integrity": "ok", "schema_revision": revision[0] if revision else None, "row_counts": {"tasks": tasks}}


def inspect(path: Path, timeout: float = 30) -> dict[str, Any]:
    """Integrity, schema revision and row counts of a database file (a copy, never the live one)."""
    conn = connect(path, timeout)
    try:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            revision = (conn.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0] \
                if "alembic_version" in tables else None
            # Names come from the copy's own catalogue; quoted as identifiers, so a hostile name cannot escape.
            counts = {name: conn.execute(f'SELECT count(*) FROM "{sql_identifier(name)}"').fetchone()[0]  # nosec B608
                      for name in tables if name != "alembic_version"} if problems == ["ok"] else {}
        except sqlite3.DatabaseError as exc:
            return {"integrity": str(exc), "schema_revision": None, "row_counts": {}}
    finally:
        conn.close()
    return {"integrity": "ok" if problems == ["ok"] else "; ".join(problems[:10]),
            "schema_revision": revision, "row_counts": counts}
