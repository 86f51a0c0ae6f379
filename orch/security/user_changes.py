"""Changing a user: role, state, password, failed-login waits; audited, tokens revoked, in one transaction.

The one implementation behind ``PATCH /users/{name}`` and ``orch user role|disable|enable|passwd``, so a
change made either way is checked, revokes the same tokens and leaves the same audit entry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import PasswordPolicySettings
from orch.security.login import unlock as forget_failures
from orch.security.passwords import hash_password, policy_problems
from orch.security.users import UserError
from orch.storage.models import ROLES, User


class UnknownUser(UserError):
    status_code = 404

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"no user {username!r}")


def update_user(session: Session, username: str, *, actor: str, policy: PasswordPolicySettings,
                caller: Caller | None = None, role: str | None = None, is_active: bool | None = None,
                password: str | None = None, unlock: bool = False) -> User:
    """Apply the changes asked for, audited as ``user.update`` with what changed (never the password).
    A change of role, state or password raises the user's ``token_version``: its older tokens stop working."""
    user = session.scalar(select(User).where(User.username == username).with_for_update())
    if user is None:
        raise UnknownUser(username)
    changed: dict[str, Any] = {}
    if role is not None and role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    if role is not None and role != user.role:
        changed["role"] = [user.role, role]
        user.role = role
    if is_active is not None and is_active != user.is_active:
        changed["is_active"] = is_active
        user.is_active = is_active
    if password is not None:
        problems = policy_problems(password, policy)
        if problems:
            raise UserError("password must contain " + ", ".join(problems))
        user.password_hash = hash_password(password)
        changed["password"] = "changed"
    if user.username == actor and (role not in (None, "admin") or is_active is False):
        raise UserError("an admin cannot demote or disable their own account; ask another admin")
    if changed:
        user.token_version += 1
    if unlock:
        changed["unlock"] = forget_failures(session, username, actor=actor, caller=caller)
    caller = caller or Caller()
    record_audit(session, actor=actor, action="user.update", resource="user", resource_id=username,
                 ip_address=caller.ip_address, user_agent=caller.user_agent, details=changed)
    return user
