"""Password login with throttling that cannot lock the owner out, audited whatever the outcome.

A hard lock after N failures let anyone lock ``admin`` out from anywhere. Failures are now counted per
(user, client address) in ``login_throttles`` (shared by every API replica): after
``security.lockout.max_failures`` of them that address waits ``base_delay_seconds`` before its next
attempt, doubling with each further failure up to ``lockout_seconds``. The owner at another address is
not affected. Failures from all addresses together (the row for address ``*``) only slow the user down
by at most ``user_max_delay_seconds``, and never at an address that has logged in as the user within
``known_address_days``, so even an attack spread over many addresses leaves the owner's usual address
working.

A throttled attempt is refused before the password hash runs (it costs two indexed reads and no write),
and it does not count as a failure: nobody learned anything from it. Rows are keyed by the name as
typed, existing or not, so throttling answers the same for every name and reveals none.

The slow password hash runs outside any transaction (it takes tens of milliseconds and SQLite has one
writer); counters then move with single-statement upserts, so concurrent failures all count. Each
transaction touches one throttle row, so two of them can never wait on each other (no deadlock on
PostgreSQL). An unknown or disabled user costs the same hash as a real one and every failure answers
the same words; the audit record keeps the real reason, the address and any wait imposed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NoReturn

from sqlalchemy import Insert, case, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import LockoutSettings, Settings
from orch.errors import OrchError
from orch.security.passwords import hash_password, needs_rehash, verify_password
from orch.storage.engine import get_engine, session_scope
from orch.storage.models import LoginThrottle, User
from orch.storage.types import utcnow

PUBLIC_FAILURE = "incorrect username or password, or the account is disabled"
ALL_ADDRESSES = "*"  # the throttle row counting a user's failures from every address
_THROTTLES = LoginThrottle.__table__
PURGE_EVERY_SECONDS = 60
_last_purge = 0.0  # this process's last purge of forgotten rows (time.monotonic)


class LoginFailed(OrchError):
    """Authentication refused; ``str()`` is safe to show, ``reason`` goes to the audit trail only."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, reason: str) -> None:
        super().__init__(PUBLIC_FAILURE)
        self.reason = reason


class LoginThrottled(OrchError):
    """Refused without checking the password: this address must wait ``retry_after`` seconds first."""

    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins for this user from this address; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class LoggedIn:
    username: str
    role: str
    token_version: int


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return hash_password("decoy password that matches nothing")


def _address(caller: Caller) -> str:
    return (caller.ip_address or "unknown")[:64]


def authenticate(settings: Settings, username: str, password: str, caller: Caller) -> LoggedIn:
    """Check the password unless this address must wait. Raises :class:`LoginThrottled` (no hash run, no
    failure counted) or :class:`LoginFailed` (counted); every checked attempt is audited."""
    address = _address(caller)
    now = utcnow()
    with session_scope(settings.database) as session:
        row = session.execute(select(User.role, User.is_active, User.password_hash, User.token_version)
                              .where(User.username == username)).first()
        throttles = {t.address: (t.blocked_until, t.last_success_at) for t in session.execute(
            select(LoginThrottle.address, LoginThrottle.blocked_until, LoginThrottle.last_success_at)
            .where(LoginThrottle.username == username, LoginThrottle.address.in_((address, ALL_ADDRESSES))))}
    wait = _wait(throttles, address, now, settings.security.lockout)
    if wait > 0:
        raise LoginThrottled(math.ceil(wait))
    if row is None:
        verify_password(password, _decoy_hash())
        _refuse(settings, username, caller, "unknown user")
    matches = verify_password(password, row.password_hash)
    if not row.is_active:
        _refuse(settings, username, caller, "user disabled")
    if not matches:
        _refuse(settings, username, caller, "wrong password")
    rehashed = hash_password(password) if needs_rehash(row.password_hash) else None
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(update(User).where(User.username == username).values(last_login_at=now))
        if rehashed is not None:  # unless the password was changed meanwhile; not a credential change
            session.execute(update(User).where(User.username == username,
                                               User.password_hash == row.password_hash)
                            .values(password_hash=rehashed))
        session.execute(_upsert(settings, {"username": username, "address": address, "failures": 0,
                                           "last_success_at": now},
                                {"failures": 0, "blocked_until": None, "last_failed_at": None,
                                 "last_success_at": now}))
        record_audit(session, actor=username, action="authenticate", resource="auth", resource_id=username,
                     ip_address=caller.ip_address, user_agent=caller.user_agent, success=True,
                     details={"rehashed": "argon2id"} if rehashed else None)
    return LoggedIn(username=username, role=row.role, token_version=row.token_version)


def _wait(throttles: dict[str, tuple[datetime | None, datetime | None]], address: str, now: datetime,
          lockout: LockoutSettings) -> float:
    """Seconds this address must still wait: its own delay, and the user-wide one unless it is known."""
    blocked, succeeded = throttles.get(address, (None, None))
    waits = [(blocked - now).total_seconds()] if blocked else []
    known = succeeded is not None and succeeded > now - timedelta(days=lockout.known_address_days)
    everyone, _ = throttles.get(ALL_ADDRESSES, (None, None))
    if everyone and not known:
        waits.append((everyone - now).total_seconds())
    return max(waits, default=0.0)


def _delay(failures: int, free: int, base: float, cap: float) -> float:
    """No wait for the first ``free - 1`` failures, then ``base`` doubling with each one, at most ``cap``."""
    if failures < free:
        return 0.0
    return min(base * 2.0 ** min(failures - free, 64), cap)


def _upsert(settings: Settings, values: dict[str, object], on_conflict: dict[str, object]) -> Insert:
    dialect = get_engine(settings.database).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_THROTTLES).values(**values).on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=["username", "address"], set_=on_conflict)


def _count_failure(settings: Settings, session: Session, username: str, address: str, now: datetime,
                   free: int, cap: float) -> tuple[int, float]:
    """One more failure on the row (counting from 1 again once it has been quiet for the window); the
    row's wait follows from the count. Returns the count and the wait in seconds."""
    lockout = settings.security.lockout
    quiet = func.coalesce(_THROTTLES.c.blocked_until, _THROTTLES.c.last_failed_at) \
        < now - timedelta(seconds=lockout.window_seconds)
    failures = session.execute(_upsert(
        settings, {"username": username, "address": address, "failures": 1, "last_failed_at": now},
        {"failures": case((quiet, 1), else_=_THROTTLES.c.failures + 1), "last_failed_at": now},
    ).returning(_THROTTLES.c.failures)).scalar_one()
    delay = _delay(failures, free, lockout.base_delay_seconds, cap)
    if delay:
        session.execute(update(LoginThrottle).where(LoginThrottle.username == username,
                                                    LoginThrottle.address == address)
                        .values(blocked_until=now + timedelta(seconds=delay)))
    return failures, delay


def _refuse(settings: Settings, username: str, caller: Caller, reason: str) -> NoReturn:
    lockout = settings.security.lockout
    address = _address(caller)
    now = utcnow()
    with session_scope(settings.database, write_lock=True) as session:
        failures, delay = _count_failure(settings, session, username, address, now, lockout.max_failures,
                                         lockout.lockout_seconds)
    details: dict[str, object] = {"reason": reason, "failures_from_address": failures}
    if delay:
        details["address_waits_seconds"] = delay
    _purge_if_due(settings, now)
    with session_scope(settings.database, write_lock=True) as session:
        total, user_delay = _count_failure(settings, session, username, ALL_ADDRESSES, now,
                                           lockout.user_max_failures, lockout.user_max_delay_seconds)
        if user_delay:
            details["user_slowed_down_seconds"] = user_delay
        record_audit(session, actor=username[:64] or "-", action="authenticate", resource="auth",
                     resource_id=username[:255] or None, ip_address=caller.ip_address,
                     user_agent=caller.user_agent, success=False, details=details)
    raise LoginFailed(reason)


def _purge_if_due(settings: Settings, now: datetime) -> None:
    """Delete rows that count nothing any more (names sprayed by an attacker would otherwise pile up):
    failures forgotten (quiet past the window, any wait included) and no recent success to remember.
    Its own transaction, so the one-row-per-transaction rule of the counters still holds."""
    global _last_purge
    if time.monotonic() - _last_purge < PURGE_EVERY_SECONDS:
        return
    _last_purge = time.monotonic()
    lockout = settings.security.lockout
    failed_before = now - timedelta(seconds=lockout.window_seconds + lockout.lockout_seconds)
    succeeded_before = now - timedelta(days=lockout.known_address_days)
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(delete(LoginThrottle).where(
            LoginThrottle.last_failed_at.is_(None) | (LoginThrottle.last_failed_at < failed_before),
            LoginThrottle.last_success_at.is_(None) | (LoginThrottle.last_success_at < succeeded_before)))


def unlock(session: Session, username: str, *, actor: str, caller: Caller | None = None) -> list[str]:
    """Forget every failure counted for ``username`` (all addresses), audited with the addresses that
    were throttled. Returns those addresses (``*``: the user-wide slow-down)."""
    now = utcnow()
    throttled = list(session.scalars(
        select(LoginThrottle.address).where(LoginThrottle.username == username, LoginThrottle.failures > 0)
        .order_by(LoginThrottle.address)))
    # Rows of addresses that logged in keep that mark (it spares them the user-wide slow-down).
    session.execute(delete(LoginThrottle).where(LoginThrottle.username == username,
                                                LoginThrottle.last_success_at.is_(None)))
    session.execute(update(LoginThrottle).where(LoginThrottle.username == username)
                    .values(failures=0, blocked_until=None, last_failed_at=None))
    caller = caller or Caller()
    record_audit(session, actor=actor, action="user.unlock", resource="user", resource_id=username,
                 ip_address=caller.ip_address, user_agent=caller.user_agent,
                 details={"addresses": throttled, "at": now.isoformat()})
    return throttled
