"""Create and upgrade the ORCH database with Alembic, from code (``orch db init|migrate``).

Alembic's config is built here rather than read from an ``alembic.ini`` so that the installed package
migrates any database the configuration names, from any working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from orch.config.schema import DatabaseSettings
from orch.storage.engine import StorageError, describe_error, get_engine, normalise_url, safe_url

MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class MigrationResult:
    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _alembic_config(connection: Connection):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def current_revision(database: DatabaseSettings) -> str | None:
    """The revision the database is at, or None when it was never initialised."""
    from alembic.runtime.migration import MigrationContext

    try:
        with get_engine(database).connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None


def upgrade(database: DatabaseSettings, *, create_database: bool = False) -> MigrationResult:
    """Bring the schema to head in one transaction for all pending revisions (DDL is transactional on
    PostgreSQL, and on SQLite SQLAlchemy emits the BEGIN): a failed step changes nothing, not even the
    revisions before it, so the database is at its old revision or at head, never between."""
    from alembic import command

    if create_database:
        ensure_database_exists(database)
    before = current_revision(database)
    try:
        with get_engine(database).begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc, database.url or "")) from None
    return MigrationResult(before=before, after=head_revision())


def ensure_database_exists(database: DatabaseSettings) -> bool:
    """Create the PostgreSQL database named by the URL when it is missing; True if it was created.

    SQLite creates its file on first connect, so there is nothing to do there.
    """
    url = normalise_url(database.url or "")
    if url.get_backend_name() != "postgresql":
        return False
    try:
        with get_engine(database).connect():
            return False
    except OperationalError as exc:
        if "does not exist" not in str(exc.orig):
            raise StorageError(describe_error(exc, database.url or "")) from None
    from sqlalchemy import create_engine

    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            name = url.database or ""
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.execute(text(f"CREATE DATABASE {quoted}"))
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot create {safe_url(url)}: {describe_error(exc, str(url))}") from None
    finally:
        admin.dispose()
    return True
