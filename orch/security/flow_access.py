"""Authorisation by effect: the permission starting each flow needs, whoever or whatever asks.

A permission belongs to what a request *does*, not to the route it came through: starting ``restore``
needs an admin whether it comes from ``POST /deployments/restore/manual/runs``, from a ``run-deployment``
task (checked against the task's owner when it is dispatched and again when it runs), or from the CLI.
This module is the one table every such path reads, so the paths cannot disagree.

Owners. A task's owner is the API user who dispatched it, or ``cli:<login>`` for ``orch dispatch``. The
CLI runs on the host with the database and the secrets, so whoever runs it can do anything an admin can;
its tasks therefore act as the local administrator (role ``admin``) at dispatch and at run time. No API
user can be named ``cli:...`` (user names are letters, digits, ``-``, ``_`` and ``.``), so the prefix
cannot be borrowed through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orch.errors import OrchError
from orch.security.rbac import Permission, has_permission

# Storage is imported where it is used: the action table imports this module, and the CLI's start-up
# must not pay for SQLAlchemy.
if TYPE_CHECKING:
    from orch.audit import Caller
    from orch.config.schema import DatabaseSettings

# Every ORCH flow (the ``@flow(name=...)`` of each deployment in prefect.yaml; a test keeps the two in step)
# and what starting it needs. Flows that change or restore the system itself: admins only.
FLOW_PERMISSIONS: dict[str, Permission] = {
    "db-health": Permission.TASK_CREATE,
    "dispatch": Permission.TASK_CREATE,
    "ops-report": Permission.TASK_CREATE,  # its file parameters are confined to the log directories
    "backup": Permission.TASK_CREATE,
    "monitor-sweep": Permission.TASK_CREATE,
    "sbom": Permission.TASK_CREATE,
    "security-scan": Permission.TASK_CREATE,
    "restore": Permission.SYSTEM_ADMIN,
    "db-maintenance": Permission.SYSTEM_ADMIN,
    "service-recovery": Permission.SYSTEM_ADMIN,
    "emergency-recovery": Permission.SYSTEM_ADMIN,
    "self-heal": Permission.SYSTEM_ADMIN,
}
# A deployment of a flow that is not ORCH's: ORCH cannot know what it does, so only an admin may start it.
UNKNOWN_FLOW_PERMISSION = Permission.SYSTEM_ADMIN
LOCAL_ADMIN_PREFIX = "cli:"
LOCAL_ADMIN_ROLE = "admin"


def permission_to_start(flow_name: str) -> Permission:
    """The permission starting a run of ``flow_name`` needs (admin for any flow ORCH does not define)."""
    return FLOW_PERMISSIONS.get(flow_name, UNKNOWN_FLOW_PERMISSION)


@dataclass(frozen=True)
class Requirement:
    """What an effect needs: ``permission``, described for a message as ``what`` (e.g. "starting restore/manual")."""

    permission: Permission
    what: str


def to_start(deployment: str) -> Requirement:
    """The requirement of starting ``flow/deployment``."""
    return Requirement(permission_to_start(deployment.partition("/")[0]), f"starting {deployment}")


class NotPermitted(OrchError):
    """``who`` (with ``role``, None when disabled or gone) lacks what ``requirement`` needs: a 403."""

    status_code = 403

    def __init__(self, who: str, role: str | None, requirement: Requirement) -> None:
        self.who, self.role, self.requirement = who, role, requirement
        holder = f"{who} (role {role}) lacks it" if role else f"{who} is disabled or no longer exists"
        super().__init__(f"{requirement.what} needs permission '{requirement.permission.value}'; {holder}")


def check(who: str, role: str | None, requirement: Requirement) -> None:
    """Raise :class:`NotPermitted` unless ``role`` holds the requirement's permission."""
    if role is None or not has_permission(role, requirement.permission):
        raise NotPermitted(who, role, requirement)


def role_of_owner(database: DatabaseSettings, owner: str) -> str | None:
    """The role ``owner`` holds *now*, read from the database; None when disabled or removed.

    Read again at run time because a task may wait in the queue for hours: an owner demoted or disabled
    meanwhile must not still start what only the old role could."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import User

    if owner.startswith(LOCAL_ADMIN_PREFIX):
        return LOCAL_ADMIN_ROLE
    with session_scope(database) as session:
        row = session.execute(select(User.role, User.is_active).where(User.username == owner)).first()
    return row.role if row is not None and row.is_active else None


def record_refusal(database: DatabaseSettings, refusal: NotPermitted, *, action: str, resource: str,
                   resource_id: str | None, caller: Caller | None = None,
                   details: dict[str, object] | None = None) -> None:
    """Audit a refused attempt (``success`` false): who tried which effect, and what it needed."""
    from orch.audit import Caller, record_audit
    from orch.storage.engine import session_scope

    caller = caller or Caller()
    with session_scope(database, write_lock=True) as session:
        record_audit(session, actor=refusal.who, action=action, resource=resource, resource_id=resource_id,
                     success=False, ip_address=caller.ip_address, user_agent=caller.user_agent,
                     details={"needs": refusal.requirement.permission.value, "role": refusal.role,
                              "effect": refusal.requirement.what, **(details or {})})


def confined(path: str | Path, directories: list[Path]) -> Path | None:
    """``path`` with symlinks and ``..`` resolved, if it lies inside one of ``directories`` (resolved the
    same way); None otherwise. A relative ``path`` is taken relative to the first directory. Nothing is
    opened or read: a flow parameter naming a file outside is refused before any byte of it is seen."""
    if not directories:
        return None
    try:
        roots = [directory.resolve() for directory in directories]
        candidate = (roots[0] / Path(path)).resolve()  # an absolute path replaces the base
    except (OSError, ValueError):  # a NUL byte, a symlink loop: not a file this flow may read
        return None
    return candidate if any(candidate.is_relative_to(root) for root in roots) else None
