"""The ``database`` section: where ORCH's own database is and how it is connected to."""

from __future__ import annotations

from pydantic import Field, field_validator

from orch.config.sections.base import Section


class DatabaseSettings(Section):
    """ORCH's database: SQLite (the default) or PostgreSQL."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. sqlite:///relative/path.db or postgresql+psycopg2://user:pw@host/db. "
        "Default: sqlite:///<data_dir>/orch.db. DATABASE_URL overrides it.",
    )
    path: str | None = Field(
        default=None, description="The guide's SQLite file path; used only when url is not set."
    )
    pool_size: int = Field(default=10, gt=0, le=1000, description="Connections each process keeps open to the "
                           "database; as many again may be opened for a burst (SQLAlchemy max_overflow).")
    timeout: float = Field(default=30, gt=0, description="Seconds to wait for a connection or a lock.")
    idle_transaction_timeout: float = Field(
        default=30, gt=0, le=3600,
        description="PostgreSQL only: seconds a session of ORCH may sit idle inside a transaction before the "
        "server ends it (idle_in_transaction_session_timeout), and the server's TCP keepalives detect a "
        "vanished client within about 25 s. A host lost or frozen mid-transaction then releases its locks "
        "(the dispatchers' claim turn, task rows) within this bound instead of when TCP gives up, hours later; "
        "keep it no more than dispatch.lease_seconds.")
    backup_interval: int = Field(default=3600, gt=0, description="The guide's key, accepted but not read: "
                                 "backups run on the schedules of the backup deployments in prefect.yaml.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split(":", 1)[0].split("+", 1)[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(f"must be a sqlite:// or postgresql:// URL, got scheme {scheme!r}")
        return value
