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

from orch.backup.files import BackupError, disk_errors


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


def inspect(path: Path, timeout: float = 30, *, thorough: bool = True) -> dict[str, Any]:
    """Integrity, schema revision and row counts of a database file.

    ``thorough=False`` runs ``quick_check`` (no index cross-checks): enough to confirm that a copy which
    passed the full check before landed intact, at a fraction of the time on a large database.
    """
    conn = connect(path, timeout)
    try:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check" if thorough else "PRAGMA quick_check")]
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
            revision = (conn.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0] \
                if "alembic_version" in tables else None
            counts = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                      for name in tables if name != "alembic_version"} if problems == ["ok"] else {}
        except sqlite3.DatabaseError as exc:
            return {"integrity": str(exc), "schema_revision": None, "row_counts": {}}
    finally:
        conn.close()
    return {"integrity": "ok" if problems == ["ok"] else "; ".join(problems[:10]),
            "schema_revision": revision, "row_counts": counts}
