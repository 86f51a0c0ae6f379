"""Silences and maintenance windows: while one is active, matching alerts neither notify nor heal.

A silence names the alerts it covers (a glob, ``*`` for all); a maintenance window always covers every
alert of its targets. Targets are globs too (``web*``). Both are audited, can start in the future, and
end at ``ends_at`` or earlier when an operator ends them.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.errors import OrchError
from orch.storage.engine import session_scope
from orch.storage.models import Silence
from orch.storage.types import utcnow

KINDS = ("silence", "maintenance")
MAX_DURATION = timedelta(days=31)


class SilenceError(OrchError):
    """A silence or maintenance window that cannot be created or ended as asked."""

    status_code = 422


class SilenceNotFound(SilenceError):
    """No silence or window has that id."""

    status_code = 404


def silence_view(row: Silence, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    active = row.ended_at is None and row.starts_at <= now < row.ends_at
    return {"id": row.id, "kind": row.kind, "target": row.target, "alert_name": row.alert_name,
            "starts_at": row.starts_at.isoformat(), "ends_at": row.ends_at.isoformat(),
            "ended_at": row.ended_at.isoformat() if row.ended_at else None, "reason": row.reason,
            "created_by": row.created_by, "active": active}


def create(settings: Settings, *, kind: str, target: str, duration: timedelta, actor: str, reason: str = "",
           alert_name: str = "*", starts_at: datetime | None = None, caller: Caller | None = None) -> dict[str, Any]:
    """Add a silence or maintenance window; refused (nothing stored) when it makes no sense."""
    if kind not in KINDS:
        raise SilenceError(f"kind must be silence or maintenance, got {kind!r}")
    if not target.strip():
        raise SilenceError("target must not be empty (use * for every target)")
    if duration <= timedelta(0) or duration > MAX_DURATION:
        raise SilenceError(f"duration must be more than 0 and at most {MAX_DURATION.days} days")
    if kind == "maintenance" and alert_name != "*":
        raise SilenceError("a maintenance window covers every alert of its targets; use a silence for some alerts")
    start = starts_at or utcnow()
    with session_scope(settings.database) as session:
        row = Silence(kind=kind, target=target, alert_name=alert_name or "*", starts_at=start,
                      ends_at=start + duration, reason=reason, created_by=actor)
        session.add(row)
        session.flush()
        record_audit(session, actor=actor, action=f"{kind}.create", resource=kind, resource_id=str(row.id),
                     ip_address=caller and caller.ip_address, user_agent=caller and caller.user_agent,
                     details={"target": target, "alert_name": row.alert_name, "ends_at": row.ends_at.isoformat(),
                              "reason": reason})
        return silence_view(row)


def end(settings: Settings, silence_id: int, actor: str, caller: Caller | None = None) -> dict[str, Any]:
    """End a silence or window now.

    A read then a write: it takes the writers' turn (SQLite's IMMEDIATE, the row lock on PostgreSQL), or
    beside concurrent dispatches SQLite refused the late upgrade to a write with "database is locked",
    and two operators ending the same silence could both audit it."""
    with session_scope(settings.database, write_lock=True) as session:
        row = session.get(Silence, silence_id, with_for_update=True)
        if row is None:
            raise SilenceNotFound(f"no silence or maintenance window with id {silence_id}")
        if row.ended_at is None:
            row.ended_at = utcnow()
            record_audit(session, actor=actor, action=f"{row.kind}.end", resource=row.kind,
                         resource_id=str(row.id), ip_address=caller and caller.ip_address,
                         user_agent=caller and caller.user_agent, details={"target": row.target})
        return silence_view(row)


def list_silences(settings: Settings, *, kind: str | None = None, include_ended: bool = False) -> list[dict[str, Any]]:
    now = utcnow()
    with session_scope(settings.database) as session:
        query = select(Silence).order_by(Silence.id.desc())
        if kind:
            query = query.where(Silence.kind == kind)
        if not include_ended:
            query = query.where(Silence.ended_at.is_(None), Silence.ends_at > now)
        return [silence_view(row, now) for row in session.scalars(query.limit(500))]


def active(settings: Settings, now: datetime | None = None) -> list[Silence]:
    now = now or utcnow()
    with session_scope(settings.database) as session:
        return list(session.scalars(select(Silence).where(
            Silence.ended_at.is_(None), Silence.starts_at <= now, Silence.ends_at > now)))


def suppressing(rows: list[Silence], target: str, alert_name: str) -> Silence | None:
    """The first active silence or window that covers this alert on this target, if any."""
    for row in rows:
        if fnmatch.fnmatchcase(target, row.target) and (
                row.kind == "maintenance" or fnmatch.fnmatchcase(alert_name, row.alert_name)):
            return row
    return None


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``1d`` (or plain seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    try:
        if raw and raw[-1] in units:
            return timedelta(seconds=float(raw[:-1]) * units[raw[-1]])
        return timedelta(seconds=float(raw))
    except ValueError:
        raise SilenceError(f"duration must look like 90s, 15m, 2h or 1d, got {text!r}") from None
