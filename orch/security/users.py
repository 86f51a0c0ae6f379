"""Creating users: policy checked, password hashed, the act audited, all in one transaction."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from orch.audit import Caller, record_audit
from orch.config.schema import PasswordPolicySettings
from orch.errors import OrchError
from orch.security.passwords import hash_password, policy_problems
from orch.storage.models import ROLES, User


class UserError(OrchError, ValueError):
    """A user could not be created as asked; the message says why in one line."""

    status_code = 422


class UserExists(UserError):
    """A user of that name exists already."""

    status_code = 409


def create_user(session: Session, *, username: str, password: str, role: str,
                policy: PasswordPolicySettings, actor: str, caller: Caller | None = None) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not username.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise UserError("username must be 1-64 letters, digits, '-', '_' or '.'")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    problems = policy_problems(password, policy)
    if problems:
        raise UserError("password must contain " + ", ".join(problems))
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExists(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    caller = caller or Caller()
    record_audit(session, actor=actor, action="user.create", resource="user", resource_id=username,
                 ip_address=caller.ip_address, user_agent=caller.user_agent, details={"role": role})
    return user
