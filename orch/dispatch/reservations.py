"""Keeping a core from other owners' tasks: a ``stay`` reservation (kept for one owner after its task
ended) or an isolation (kept for nobody, until an operator releases it).

Both are a row in ``core_reservations``; dispatch skips a reserved core for every other owner, and an
isolation's owner (``isolated:<who>``) owns no task, so an isolated core runs nothing at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.dispatch.errors import DispatchError, InvalidTransition
from orch.storage.engine import session_scope
from orch.storage.models import CoreReservation, Task
from orch.storage.types import clock_of_record

ISOLATION_OWNER = "isolated:"  # a core reserved for this owner runs nobody else's tasks
ISOLATION_SECONDS = 10 * 365 * 86400  # until an operator releases it (`orch cores release CORE`)


class UnknownCore(DispatchError):
    """Neither configured, nor ever given a task, nor reserved."""

    status_code = 404

    def __init__(self, core_id: str, known: list[str]) -> None:
        self.core_id = core_id
        super().__init__(f"unknown core {core_id!r} (known: {', '.join(known) or 'none'})")


class NotReserved(InvalidTransition):
    def __init__(self, core_id: str) -> None:
        super().__init__(f"core {core_id} is not reserved; nothing to release")


class IsolationNeedsAdmin(DispatchError):
    """An isolation keeps work off a core an alert found unhealthy: only an admin may end it."""

    status_code = 403

    def __init__(self, core_id: str, owner: str) -> None:
        super().__init__(f"core {core_id} is isolated ({owner}); releasing an isolation needs permission "
                         "'system:admin'")


def kind_of(owner: str) -> str:
    return "isolated" if owner.startswith(ISOLATION_OWNER) else "stay"


def reservation_view(reservation: CoreReservation) -> dict[str, Any]:
    return {"owner": reservation.owner, "task_id": reservation.task_id,
            "expires_at": reservation.expires_at.isoformat(), "kind": kind_of(reservation.owner)}


def known_cores(session: Session, settings: Settings) -> list[str]:
    """Configured cores, cores that have tasks, and reserved ones, sorted. The cores with tasks are found
    by skipping along the ``core_id`` index one core at a time, so millions of tasks cost a few lookups."""
    cores = set(settings.dispatch.cores) | set(session.scalars(select(CoreReservation.core_id)))
    last = session.scalar(select(func.min(Task.core_id)))
    while last is not None:
        cores.add(last)
        last = session.scalar(select(func.min(Task.core_id)).where(Task.core_id > last))
    return sorted(cores)


def _require_known(session: Session, settings: Settings, core_id: str) -> None:
    if core_id in settings.dispatch.cores or session.get(CoreReservation, core_id) is not None:
        return
    if session.scalar(select(Task.core_id).where(Task.core_id == core_id).limit(1)) is None:
        raise UnknownCore(core_id, known_cores(session, settings))


def isolate_core(settings: Settings, core_id: str, by: str, *, actor: str | None = None, reason: str = "",
                 caller: Caller | None = None, known_only: bool = False) -> dict[str, Any]:
    """Stop dispatching to ``core_id`` (reserve it for ``isolated:<by>``, which owns no task) until released.
    Audited when an ``actor`` (a person, not the self-heal flow) asks; ``known_only`` refuses an unknown core."""
    owner = f"{ISOLATION_OWNER}{by}"
    with session_scope(settings.database, write_lock=True) as session:
        if known_only:
            _require_known(session, settings, core_id)
        reservation = session.get(CoreReservation, core_id, with_for_update=True)
        expires = clock_of_record(session) + timedelta(seconds=ISOLATION_SECONDS)
        if reservation is None:
            reservation = CoreReservation(core_id=core_id, owner=owner, task_id=None, expires_at=expires)
            session.add(reservation)
        else:
            reservation.owner, reservation.task_id, reservation.expires_at = owner, None, expires
        if actor is not None:
            caller = caller or Caller()
            record_audit(session, actor=actor, action="core.isolate", resource="core", resource_id=core_id,
                         ip_address=caller.ip_address, user_agent=caller.user_agent, details={"reason": reason})
        return reservation_view(reservation)


def release_core(settings: Settings, core_id: str, actor: str, caller: Caller | None = None, *,
                 may_end_isolation: bool = True) -> dict[str, Any]:
    """End the core's reservation, audited; returns what was released. :class:`UnknownCore` for a core
    ORCH has never heard of, :class:`NotReserved` when nothing (or only an expired reservation) holds it,
    :class:`IsolationNeedsAdmin` for an isolation when ``may_end_isolation`` is False."""
    with session_scope(settings.database, write_lock=True) as session:
        _require_known(session, settings, core_id)
        reservation = session.get(CoreReservation, core_id, with_for_update=True)
        if reservation is None or reservation.expires_at <= clock_of_record(session):
            raise NotReserved(core_id)
        if kind_of(reservation.owner) == "isolated" and not may_end_isolation:
            raise IsolationNeedsAdmin(core_id, reservation.owner)
        released = reservation_view(reservation)
        session.delete(reservation)
        caller = caller or Caller()
        record_audit(session, actor=actor, action="core.release", resource="core", resource_id=core_id,
                     ip_address=caller.ip_address, user_agent=caller.user_agent,
                     details={"owner": released["owner"], "kind": released["kind"]})
        return released
