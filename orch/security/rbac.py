"""Roles and what they may do: the guide's RBAC table, plus ``system`` for cores and internal callers.

Every API route names one :class:`Permission`; a role either holds it or the call is refused (403).
The table lives here, in one place, so the docs (docs/api.md), the API and the tests all read the same answer.
"""

from __future__ import annotations

from enum import Enum


class Permission(str, Enum):
    TASK_CREATE = "task:create"
    TASK_READ = "task:read"
    TASK_UPDATE = "task:update"
    TASK_DELETE = "task:delete"
    SYSTEM_MONITOR = "system:monitor"
    SYSTEM_ADMIN = "system:admin"
    USER_CREATE = "user:create"
    USER_READ = "user:read"
    USER_UPDATE = "user:update"
    USER_DELETE = "user:delete"
    # Beyond the guide: an operator on call must be able to silence a paging alert; a viewer must not.
    ALERT_SILENCE = "alert:silence"
    # Beyond the guide: a core reporting on its own tasks (external action) and taking work.
    CORE_REPORT = "core:report"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission) - {Permission.CORE_REPORT},
    "operator": frozenset({Permission.TASK_CREATE, Permission.TASK_READ, Permission.TASK_UPDATE,
                           Permission.SYSTEM_MONITOR, Permission.ALERT_SILENCE}),
    "viewer": frozenset({Permission.TASK_READ, Permission.SYSTEM_MONITOR}),
    # Cores and internal callers: take and report work, read tasks, nothing about users or the system.
    "system": frozenset({Permission.TASK_READ, Permission.CORE_REPORT}),
}

def has_permission(role: str, permission: Permission) -> bool:
    """Whether ``role`` may do ``permission``; an unknown role may do nothing."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())
