"""Password login with account lockout, audited whatever the outcome.

The slow password hash runs outside any transaction (it takes tens of milliseconds and SQLite has one
writer); the counters are then moved with one short atomic UPDATE, so concurrent failures all count.
An unknown or disabled user costs the same hash as a real one, so timing does not reveal which names
exist, and every failure answers the same words; the audit record keeps the real reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import NoReturn

from sqlalchemy import case, select, update

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.security.passwords import hash_password, verify_password
from orch.storage.engine import session_scope
from orch.storage.models import User
from orch.storage.types import utcnow

PUBLIC_FAILURE = "incorrect username or password, or the account is locked or disabled"


class LoginFailed(Exception):
    """Authentication refused; ``str()`` is safe to show, ``reason`` goes to the audit trail only."""

    def __init__(self, reason: str) -> None:
        super().__init__(PUBLIC_FAILURE)
        self.reason = reason


@dataclass(frozen=True)
class LoggedIn:
    username: str
    role: str


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return hash_password("decoy password that matches nothing")


def authenticate(settings: Settings, username: str, password: str, caller: Caller) -> LoggedIn:
    """Check the password; lock the account after ``security.lockout.max_failures`` failures within
    ``window_seconds``. Raises :class:`LoginFailed`; every attempt is audited."""
    with session_scope(settings.database) as session:
        user = session.scalar(select(User).where(User.username == username))
        snapshot = None if user is None else (user.role, user.is_active, user.locked_until)
    now = utcnow()
    if snapshot is None:
        verify_password(password, _decoy_hash())
        _refuse(settings, username, caller, "unknown user", count=False)
    role, active, locked_until = snapshot
    matches = verify_password(password, user.password_hash)
    if not active:
        _refuse(settings, username, caller, "user disabled", count=False)
    if locked_until is not None and locked_until > now:
        _refuse(settings, username, caller, f"account locked until {locked_until.isoformat()}",
                       count=False)
    if not matches:
        _refuse(settings, username, caller, "wrong password", count=True)
    with session_scope(settings.database, write_lock=True) as session:
        session.execute(update(User).where(User.username == username).values(
            failed_attempts=0, locked_until=None, last_failed_at=None, last_login_at=now))
        record_audit(session, actor=username, action="authenticate", resource="auth", resource_id=username,
                     ip_address=caller.ip_address, user_agent=caller.user_agent, success=True)
    return LoggedIn(username=username, role=role)


def _refuse(settings: Settings, username: str, caller: Caller, reason: str, *, count: bool) -> NoReturn:
    lockout = settings.security.lockout
    now = utcnow()
    details: dict[str, object] = {"reason": reason}
    with session_scope(settings.database, write_lock=True) as session:
        if count:
            window_start = now - timedelta(seconds=lockout.window_seconds)
            # Failures older than the window start a new count; the count that reaches the limit locks.
            fresh = (User.last_failed_at.is_(None)) | (User.last_failed_at < window_start)
            attempts = case((fresh, 1), else_=User.failed_attempts + 1)
            session.execute(update(User).where(User.username == username).values(
                failed_attempts=attempts, last_failed_at=now))
            user = session.scalar(select(User).where(User.username == username))
            if user is not None and user.failed_attempts >= lockout.max_failures:
                user.locked_until = now + timedelta(seconds=lockout.lockout_seconds)
                user.failed_attempts = 0
                details["locked_until"] = user.locked_until.isoformat()
        record_audit(session, actor=username[:64] or "-", action="authenticate", resource="auth",
                     resource_id=username[:255] or None, ip_address=caller.ip_address,
                     user_agent=caller.user_agent, success=False, details=details)
    raise LoginFailed(reason)
