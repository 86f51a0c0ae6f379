"""The ``maintenance`` section: weekly database upkeep and what it purges."""

from __future__ import annotations

from pydantic import Field

from orch.config.sections.base import Section


class MaintenanceSettings(Section):
    """Weekly database upkeep and what it purges."""

    events_retention_days: int = Field(default=90, gt=0, description="Events of finished tasks older than "
                                       "this are purged (the task rows stay).")
    audit_retention_days: int = Field(default=730, gt=0, description="Audit records older than this are "
                                      "purged; long by default, since audits answer questions late.")
    log_retention_days: int = Field(default=7, gt=0, description="Rotated logs older than this are removed "
                                    "by recovery when the disk is low (the guide's find -mtime +7).")
