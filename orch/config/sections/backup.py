"""The ``backup`` section: verified backups of the ORCH database, their catalog and their retention."""

from __future__ import annotations

from pydantic import Field

from orch.config.sections.base import Section


class BackupSettings(Section):
    """Verified backups of the ORCH database, their catalog and their retention."""

    directory: str | None = Field(default=None, description="Where backups and catalog.json live. "
                                  "Default: <data_dir>/backups.")
    retention_days: int = Field(default=30, gt=0, description="Backups older than this are pruned ...")
    keep_last: int = Field(default=7, ge=1, description="... except the newest this many verified ones.")
    compression_level: int = Field(default=1, ge=1, le=9, description="gzip level of SQLite backups.")
    lock_timeout: float = Field(default=300, gt=0, description="Seconds a backup or restore waits for the "
                                "orch:database lock (held by another backup, restore or maintenance).")
    pg_dump: str = Field(default="pg_dump", description="pg_dump executable (same major as the server).")
    pg_restore: str = Field(default="pg_restore", description="pg_restore executable.")
