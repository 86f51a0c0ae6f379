"""Per-resource locks for tasks and flows: owner, TTL, extend, release, ordered waiting, statistics.

One table holds every held lock. A running task holds the locks it asked for (owner ``task:<id>``,
expiring with its lease); a flow takes one with :meth:`LockManager.hold` (the backup flow holds
``orch:database``). Every lock has a TTL, so a holder that dies frees it when the TTL runs out.

Waiting is ordered, with the queue's own rule (:mod:`orch.dispatch.ordering`): a waiter's key is
``requested_at - priority * aging_seconds`` and the lock goes to the smallest key. Queued tasks are
waiters too: a task that needs a lock does not start while a flow with a smaller key waits for it.
Keys never change, so nobody waits behind an unbounded stream of later arrivals.

TTLs, expiry and waiters' keys are read from the clock of record (:func:`orch.storage.types.clock_of_record`:
the database's on PostgreSQL), so a host whose clock runs ahead takes no live lock and one running behind
neither keeps an expired lock nor jumps the line.

Why not Prefect's global concurrency limits: their slots are taken by clients polling with backoff,
so there is no waiting order (a low-priority waiter can starve behind a busy resource), the holder is
not recorded for an operator to see, and there are no wait statistics: exactly what is asked of these
locks. Their one strength, a lease that expires when its holder dies, the TTL gives here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.dispatch.errors import DispatchError
from orch.dispatch.ordering import Priority, sort_key
from orch.storage.engine import session_scope
from orch.storage.models import LockStats, LockWaiter, ResourceLock
from orch.storage.types import clock_of_record

WAITER_TTL = 10.0  # a waiter that stops polling for this long is dropped from the line


class LockTimeout(DispatchError):
    status_code = 409  # another owner holds it

    def __init__(self, resource: str, owner: str, timeout: float, holder: str | None) -> None:
        super().__init__(f"lock {resource} not acquired by {owner} within {timeout:g} s"
                         + (f" (held by {holder})" if holder else ""))


class LockNotHeld(DispatchError):
    status_code = 409

    def __init__(self, resource: str, owner: str) -> None:
        super().__init__(f"lock {resource} is not held by {owner}")


def stats_row(session: Session, resource: str) -> LockStats:
    row = session.get(LockStats, resource)
    if row is None:
        row = LockStats(resource=resource, acquisitions=0, total_wait_seconds=0.0, max_wait_seconds=0.0,
                        timeouts=0, expirations=0)
        session.add(row)
    return row


def record_acquisition(session: Session, resource: str, waited: float) -> None:
    stats = stats_row(session, resource)
    stats.acquisitions += 1
    stats.total_wait_seconds += waited
    stats.max_wait_seconds = max(stats.max_wait_seconds, waited)


def expire_locks(session: Session, now: datetime, resources: list[str] | None = None) -> int:
    """Drop held locks past their TTL (counted per resource) and waiters that stopped polling."""
    query = select(ResourceLock).where(ResourceLock.expires_at <= now)
    if resources is not None:
        query = query.where(ResourceLock.resource.in_(resources))
    expired = session.scalars(query).all()
    for lock in expired:
        stats_row(session, lock.resource).expirations += 1
        session.delete(lock)
    session.execute(delete(LockWaiter).where(LockWaiter.expires_at <= now))
    return len(expired)


class LockManager:
    def __init__(self, settings: Settings) -> None:
        self.database = settings.database
        self.aging_seconds = settings.dispatch.aging_seconds

    def acquire(self, resource: str, owner: str, *, ttl: float, priority: Priority = Priority.NORMAL,
                timeout: float = 0.0, poll_seconds: float = 0.1) -> dict[str, Any]:
        """Take ``resource`` for ``owner`` for ``ttl`` seconds, waiting in line up to ``timeout``."""
        deadline = time.monotonic() + timeout
        waiter_id: int | None = None
        while True:
            with session_scope(self.database, write_lock=True) as session:
                now = clock_of_record(session)
                expire_locks(session, now, [resource])
                waiter = session.get(LockWaiter, waiter_id) if waiter_id is not None else None
                if waiter is None:
                    waiter = LockWaiter(resource=resource, owner=owner, priority=int(priority),
                                        sort_key=sort_key(now.timestamp(), priority, self.aging_seconds),
                                        requested_at=now, expires_at=now)
                    session.add(waiter)
                waiter.expires_at = now + timedelta(seconds=max(WAITER_TTL, poll_seconds * 5))
                session.flush()
                waiter_id = waiter.id
                # The line before the holder: a waiter that takes the lock deletes its place in the same
                # commit, so under READ COMMITTED (PostgreSQL) seeing its place gone means seeing its lock
                # too. Read the other way round, a commit in between shows "free" and "first" together,
                # and two waiters insert the lock (a unique violation instead of a wait).
                first = session.scalar(select(func.min(LockWaiter.sort_key)).where(
                    LockWaiter.resource == resource))
                holder = session.get(ResourceLock, resource)
                if holder is None and first is not None and waiter.sort_key <= first:
                    lock = ResourceLock(resource=resource, owner=owner, priority=int(priority),
                                        acquired_at=now, expires_at=now + timedelta(seconds=ttl))
                    session.add(lock)
                    record_acquisition(session, resource, (now - waiter.requested_at).total_seconds())
                    session.delete(waiter)
                    return _view(lock)
                gave_up = time.monotonic() >= deadline
                if gave_up:  # counted and out of the line in this commit; raised after it
                    stats_row(session, resource).timeouts += 1
                    session.delete(waiter)
                    holder_name = holder.owner if holder else None
            if gave_up:
                raise LockTimeout(resource, owner, timeout, holder_name)
            time.sleep(poll_seconds)

    def extend(self, resource: str, owner: str, ttl: float) -> dict[str, Any]:
        """Push the expiry to ``ttl`` seconds from now; only the live holder may."""
        with session_scope(self.database, write_lock=True) as session:
            lock = session.get(ResourceLock, resource)
            now = clock_of_record(session)
            if lock is None or lock.owner != owner or lock.expires_at <= now:
                raise LockNotHeld(resource, owner)
            lock.expires_at = now + timedelta(seconds=ttl)
            return _view(lock)

    def release(self, resource: str, owner: str | None = None, *, actor: str | None = None,
                caller: Caller | None = None) -> bool:
        """Release (``owner`` None: ``actor``, an operator, forcing it, which is audited). False when
        nothing was held."""
        with session_scope(self.database, write_lock=True) as session:
            lock = session.get(ResourceLock, resource)
            if lock is None:
                return False
            if owner is not None and lock.owner != owner:
                raise LockNotHeld(resource, owner)
            session.delete(lock)
            if owner is None:
                caller = caller or Caller()
                record_audit(session, actor=actor or "unknown", action="lock.release", resource="lock",
                             resource_id=resource, ip_address=caller.ip_address, user_agent=caller.user_agent,
                             details={"holder": lock.owner})
            return True

    def cleanup_expired(self) -> int:
        with session_scope(self.database, write_lock=True) as session:
            return expire_locks(session, clock_of_record(session))

    @contextmanager
    def hold(self, resource: str, owner: str, *, ttl: float = 60.0, priority: Priority = Priority.HIGH,
             timeout: float = 300.0) -> Iterator[dict[str, Any]]:
        """Hold ``resource`` for a block of work, renewing the TTL while the block runs; a process
        that dies mid-block stops renewing, so the lock frees itself within ``ttl``."""
        lock = self.acquire(resource, owner, ttl=ttl, priority=priority, timeout=timeout)
        done = threading.Event()

        def renew() -> None:
            while not done.wait(ttl / 3):
                self.extend(resource, owner, ttl)

        renewer = threading.Thread(target=renew, name=f"lock-renew:{resource}", daemon=True)
        renewer.start()
        try:
            yield lock
        finally:
            done.set()
            renewer.join()
            self.release(resource, owner)

    def list(self) -> list[dict[str, Any]]:
        """Every resource that is held, waited for, or has history, with its wait statistics."""
        with session_scope(self.database) as session:
            now = clock_of_record(session)
            held = {lock.resource: lock for lock in session.scalars(
                select(ResourceLock).where(ResourceLock.expires_at > now))}
            waiting: dict[str, list[LockWaiter]] = {}
            for waiter in session.scalars(select(LockWaiter).where(LockWaiter.expires_at > now)
                                          .order_by(LockWaiter.sort_key)):
                waiting.setdefault(waiter.resource, []).append(waiter)
            stats = {row.resource: row for row in session.scalars(select(LockStats))}
            out = []
            for resource in sorted(set(held) | set(waiting) | set(stats)):
                row = stats.get(resource)
                lock = held.get(resource)
                line = waiting.get(resource, [])
                out.append({
                    "resource": resource,
                    "held": _view(lock) if lock else None,
                    "waiting": [{"owner": w.owner, "priority": Priority(w.priority).label,
                                 "waited_seconds": round((now - w.requested_at).total_seconds(), 3)} for w in line],
                    "stats": {
                        "acquisitions": row.acquisitions if row else 0,
                        "avg_wait_seconds": round(row.total_wait_seconds / row.acquisitions, 3)
                        if row and row.acquisitions else 0.0,
                        "max_wait_seconds": round(row.max_wait_seconds, 3) if row else 0.0,
                        "timeouts": row.timeouts if row else 0,
                        "expirations": row.expirations if row else 0,
                    },
                })
            return out


def _view(lock: ResourceLock) -> dict[str, Any]:
    return {"resource": lock.resource, "owner": lock.owner, "priority": Priority(lock.priority).label,
            "acquired_at": lock.acquired_at.isoformat(), "expires_at": lock.expires_at.isoformat()}
