"""The audit trail: who did what, recorded in the same transaction as the act itself.

Writing the record in the caller's session means an act and its audit entry commit or roll back
together: there is never an unaudited change nor an entry for a change that did not happen.

The same entry is also appended to ``logging.audit_file`` (``logs/audit.log``) as one JSON line with
the guide's ``AuditEvent`` fields, but only once the transaction has committed, so the file never
claims an act the database rolled back, nor one of a savepoint rolled back inside a transaction that
committed (a group of dispatches, :mod:`orch.api.dispatch_group`): :mod:`orch.storage.committed`. The
file handler reopens the file when logrotate moves it (``WatchedFileHandler``) and never rotates it
itself, so several processes can append to one file.

The line is made from the entry's values after the one masking rule for structured data
(``redact_structure``) has masked them, so the file handler's redacting filter, there for anything
else that reaches the file, does not scan it again: a ``task.create`` entry for a batch of 100 tasks
whose params name a password cost 22 ms in that rescan, which also mangled the JSON of a value such as
``password="x"`` (masking its escaped quote instead of its value).
"""

from __future__ import annotations

import functools
import json
import logging
import logging.handlers
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from orch.log_handlers import RedactingFilter
from orch.redaction import redact_structure
from orch.storage.committed import after_commit
from orch.storage.models import AuditRecord
from orch.storage.types import utcnow

_trail = logging.getLogger("orch.audit.trail")
_trail.propagate = False  # the trail has its own file; it is not part of the operational log
_trail.setLevel(logging.INFO)
_lock = threading.Lock()


@dataclass(frozen=True)
class Caller:
    """Where a request came from, for the audit trail (the CLI leaves both unset)."""

    ip_address: str | None = None
    user_agent: str | None = None


def record_audit(session: Session, *, actor: str, action: str, resource: str,
                 resource_id: str | None = None, success: bool = True, ip_address: str | None = None,
                 user_agent: str | None = None, details: dict[str, Any] | None = None) -> None:
    """Add the entry to ``session``'s transaction (a Core insert: acts such as a dispatch are audited on
    every call, and the ORM's unit of work would cost more than the act)."""
    row = {"timestamp": utcnow(), "actor": actor[:64], "action": action, "resource": resource,
           "resource_id": resource_id, "success": success, "ip_address": ip_address,
           "user_agent": user_agent[:255] if user_agent else None, "details": details or {}}
    session.connection().execute(insert(AuditRecord.__table__), row)
    if _trail.handlers:
        after_commit(session, functools.partial(_trail.info, _line(row)))


def configure_audit_log(path: str | None) -> None:
    """Send committed audit entries to ``path`` too (None: database only). Idempotent per path."""
    with _lock:
        current = [h for h in _trail.handlers if isinstance(h, logging.FileHandler)]
        if path and current and Path(current[0].baseFilename) == Path(path).resolve():
            return
        for handler in list(_trail.handlers):
            _trail.removeHandler(handler)
            handler.close()
        if not path:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_AuditFilter())
        _trail.addHandler(handler)
        _trail.propagate = False


class _MaskedLine(str):
    """A line made only from masked values (:func:`_line`); nothing outside this module makes one."""

    __slots__ = ()


class _AuditFilter(RedactingFilter):
    """The redacting filter, minus the rescan of a line :func:`_line` made from masked values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (type(record.msg) is _MaskedLine and not record.args and record.exc_info is None
                and not record.exc_text and not record.stack_info):
            return True
        return super().filter(record)


def _line(row: dict[str, Any]) -> _MaskedLine:
    """The guide's ``AuditEvent`` as one JSON line, every value masked as structured data is."""
    return _MaskedLine(json.dumps(redact_structure({
        "timestamp": row["timestamp"].isoformat(), "user_id": row["actor"], "username": row["actor"],
        "action": row["action"], "resource": row["resource"], "resource_id": row["resource_id"],
        "ip_address": row["ip_address"], "user_agent": row["user_agent"], "success": row["success"],
        "details": row["details"], "event_type": "audit",
    }), default=str, separators=(",", ":")))
