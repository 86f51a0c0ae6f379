"""The audit trail: who did what, recorded in the same transaction as the act itself.

Writing the record in the caller's session means an act and its audit entry commit or roll back
together: there is never an unaudited change nor an entry for a change that did not happen.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from orch.storage.models import AuditRecord


def record_audit(session: Session, *, actor: str, action: str, resource: str,
                 resource_id: str | None = None, success: bool = True, ip_address: str | None = None,
                 user_agent: str | None = None, details: dict[str, Any] | None = None) -> AuditRecord:
    entry = AuditRecord(actor=actor, action=action, resource=resource, resource_id=resource_id,
                        success=success, ip_address=ip_address, user_agent=user_agent,
                        details=details or {})
    session.add(entry)
    return entry
