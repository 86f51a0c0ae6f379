"""An empty Prefect database at Prefect's schema head, made once per installed Prefect version, which a fresh
``orch up`` copies in before it starts its Prefect server.

Why: a Prefect server started on a new SQLite file first runs Prefect's whole migration history (about 150
revisions), a third of a fresh ``orch up`` on this project's 2-core machine (scripts/bench_startup.py, one run:
the stack's server ready after 13.6 s on a new file, 7.5 s on a copy of this template). The migrations' result depends
only on Prefect's version, so ``make install`` makes it once (``python -m orch.stack.prefect_template``) and
every fresh data directory starts from a copy. The server still runs its migrations at start: on the copy
they find nothing to do, and a copy from another version could not be used by mistake, because the file is
named for the version that made it.

The template holds only Prefect's schema and its built-in block types (what the server registers at start):
no ids of this installation, no secrets. The copy is seeded only into the database ``orch up`` itself gives
its server (``data/prefect/prefect.db``) and only when that file does not exist yet; a server configured
elsewhere (``PREFECT_API_URL``, a ``PREFECT_SERVER_DATABASE_*`` or ``PREFECT_API_DATABASE_*`` variable, a
profile or a ``PREFECT_HOME`` of the operator's) is left to Prefect. Without a template, Prefect migrates as
it always did.

This module imports Prefect only in :func:`build`, in its own process: the seeding side runs in ``orch up``
before any component starts and must stay cheap.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from orch.errors import OrchError

DB_FILE = "prefect.db"
# What would point Prefect's server at another database than PREFECT_HOME/prefect.db.
_ELSEWHERE_PREFIXES = ("PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_")
_ELSEWHERE_NAMES = ("PREFECT_PROFILES_PATH", "PREFECT_PROFILE")


def template_path() -> Path:
    """Where this environment keeps the template of its Prefect version (inside the environment itself:
    a new virtualenv, or a new Prefect in it, has none until ``make install`` makes one)."""
    return Path(sys.prefix) / "var" / "orch-next" / f"prefect-{version('prefect')}.db"


def _chooses_database(variable: str) -> bool:
    """Whether this environment variable would point Prefect's server elsewhere than PREFECT_HOME/prefect.db."""
    return variable.startswith(_ELSEWHERE_PREFIXES) or variable in _ELSEWHERE_NAMES


def seedable(env: dict[str, str], managed_home: Path, cwd: Path) -> bool:
    """Whether ``orch up``'s Prefect server (started with ``env`` in ``cwd``) will keep its database in
    ``managed_home/prefect.db``: nothing in its environment or its working directory's Prefect settings
    files (``prefect.toml``, ``.env``) chose another."""
    if Path(env.get("PREFECT_HOME", "")) != managed_home:
        return False
    if any(_chooses_database(key) for key in env):
        return False
    for name in ("prefect.toml", ".env"):
        settings_file = cwd / name
        if settings_file.is_file() and "database" in settings_file.read_text(encoding="utf-8", errors="replace"):
            return False
    return True


class TemplateUnusable(OrchError):
    """The template is not a whole Prefect database (truncated, damaged, not one at all); the message says why.
    Nothing was copied: Prefect creates its own database, as without a template."""


def seed(prefect_home: Path, template: Path | None = None) -> bool:
    """Copy the template to ``prefect_home/prefect.db`` when that does not exist yet; True when copied.

    The copy is checked (SQLite's ``quick_check`` and Prefect's schema revision) and then linked into place,
    so a stop in the middle or a damaged template leaves either no database (Prefect then migrates one) or a
    whole one, never a partial file the server would open. A damaged template raises
    :class:`TemplateUnusable` and copies nothing.
    """
    source = template_path() if template is None else template
    target = prefect_home / DB_FILE
    if target.exists() or not source.is_file():
        return False
    prefect_home.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{DB_FILE}.", dir=prefect_home)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        problem = _not_a_prefect_database(Path(partial))
        if problem:
            raise TemplateUnusable(f"the Prefect database template {source} is unusable ({problem}); Prefect "
                                   "creates its own (make the template again: python -m orch.stack.prefect_template "
                                   "--force)")
        try:
            os.link(partial, target)  # never replaces a database that appeared meanwhile
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(partial)


def _not_a_prefect_database(path: Path) -> str | None:
    """Why ``path`` is not a whole SQLite database at some Prefect schema revision; None when it is."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            checked = connection.execute("PRAGMA quick_check").fetchone()
            if checked != ("ok",):
                return f"SQLite quick_check: {checked[0] if checked else 'no answer'}"
            if connection.execute("SELECT count(*) FROM alembic_version").fetchone() != (1,):
                return "no Prefect schema revision"
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def build(target: Path) -> Path:
    """Make the template at ``target``: Prefect's migrations and block types on a scratch SQLite file, then
    ``VACUUM INTO`` a file beside ``target``, renamed into place (concurrent builders are harmless)."""
    import sqlite3

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orch-prefect-template-") as scratch:
        scratch_db = Path(scratch) / DB_FILE
        for key in [key for key in os.environ if _chooses_database(key)]:
            del os.environ[key]
        os.environ["PREFECT_HOME"] = scratch
        os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{scratch_db}"
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        _migrate_and_register()
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        partial.unlink(missing_ok=True)
        try:
            connection = sqlite3.connect(scratch_db)
            try:
                connection.execute("VACUUM INTO ?", (str(partial),))
            finally:
                connection.close()
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def _migrate_and_register() -> None:
    """What Prefect's server does with its database before it serves: migrate, register block types."""
    import asyncio

    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    async def run() -> None:
        database = provide_database_interface()
        await database.create_db()
        async with await database.session() as session:
            await run_block_auto_registration(session=session)
            await session.commit()

    asyncio.run(run())


def main(argv: list[str]) -> int:
    """``python -m orch.stack.prefect_template [--force]``: make this environment's template if missing."""
    if any(arg != "--force" for arg in argv):
        raise SystemExit("usage: python -m orch.stack.prefect_template [--force]")
    target = template_path()
    if target.is_file() and "--force" not in argv:
        print(f"Prefect database template: {target} (exists)")
        return 0
    build(target)
    print(f"Prefect database template: {target} (made)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
