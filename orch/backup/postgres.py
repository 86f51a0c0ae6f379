"""PostgreSQL backups with the server's own tools: ``pg_dump -Fc`` and ``pg_restore``.

A dump is verified by restoring it into a scratch database and running the same checks a SQLite copy
gets there (schema revision, row counts, the data-quality suite); the scratch database is dropped after.
The tools must be the server's major version (pg_dump refuses a newer server); the error says so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, create_engine, text
from sqlalchemy import inspect as sa_inspect

from orch.backup.files import BackupError, sql_identifier
from orch.config.schema import Settings
from orch.storage.engine import normalise_url, safe_url


def _tool(settings: Settings, name: str) -> str:
    configured = getattr(settings.backup, name)
    found = shutil.which(configured)
    if not found:
        raise BackupError(f"{configured} not found: install the PostgreSQL client tools of the server's major "
                          f"version (or set backup.{name})")
    return found


def _libpq(url: URL) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for the tools; the password goes through the environment, never argv."""
    args = ["--host", url.host or "127.0.0.1", "--port", str(url.port or 5432)]
    if url.username:
        args += ["--username", url.username]
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise BackupError(f"{what} failed: {lines[-1] if lines else f'exit {result.returncode}'}")


def dump(settings: Settings, url_text: str, target: Path) -> None:
    url = normalise_url(url_text)
    args, env = _libpq(url)
    _run([_tool(settings, "pg_dump"), "-Fc", "--no-owner", "--no-privileges", *args, "--file", str(target),
          url.database or ""], env, f"pg_dump of {safe_url(url)}")


def restore(settings: Settings, url_text: str, source: Path) -> None:
    """Replace the database's contents with the dump in ONE transaction: a failure changes nothing."""
    url = normalise_url(url_text)
    args, env = _libpq(url)
    _run([_tool(settings, "pg_restore"), "--clean", "--if-exists", "--single-transaction", "--no-owner",
          "--no-privileges", "--exit-on-error", *args, "--dbname", url.database or "", str(source)],
         env, f"pg_restore into {safe_url(url)}")


def tool_versions(settings: Settings, url_text: str) -> dict[str, Any]:
    """The client tools' and the server's versions and whether their majors match (pg_dump refuses a
    newer server, and an older pg_restore may not read a newer dump)."""
    out: dict[str, Any] = {}
    for name in ("pg_dump", "pg_restore"):
        result = subprocess.run([_tool(settings, name), "--version"], capture_output=True, text=True)
        out[name] = result.stdout.strip()
    engine = create_engine(normalise_url(url_text))
    try:
        with engine.connect() as connection:
            out["server"] = str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()
    majors = {_major(out[name]) for name in ("pg_dump", "pg_restore", "server")}
    out["compatible"] = len(majors) == 1 and None not in majors
    return out


def _major(version: str) -> str | None:
    """``15`` from ``pg_dump (PostgreSQL) 15.20 (Debian ...)`` or from the server's ``15.20 (Debian ...)``."""
    number = next((token for token in version.split() if re.fullmatch(r"\d+(\.\d+)*", token)), None)
    return number.split(".")[0] if number else None


@contextmanager
def scratch_database(url_text: str) -> Iterator[str]:
    """A fresh, empty database on the same server, dropped afterwards whatever happens."""
    url = normalise_url(url_text)
    name = f"orch_verify_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def inspect(url_text: str) -> dict[str, Any]:
    """Schema revision and row counts (PostgreSQL checks pages itself; a round trip is its integrity)."""
    engine = create_engine(normalise_url(url_text))
    try:
        with engine.connect() as connection:
            tables = sorted(sa_inspect(connection).get_table_names())
            revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar() \
                if "alembic_version" in tables else None
            # Names come from the copy's own catalogue; quoted as identifiers, so a hostile name cannot escape.
            counts = {name: int(connection.execute(text(f'SELECT count(*) FROM "{sql_identifier(name)}"')).scalar_one())  # nosec B608
                      for name in tables if name != "alembic_version"}
    finally:
        engine.dispose()
    return {"integrity": "ok", "schema_revision": revision, "row_counts": counts}
