"""Users (``/users``) and the audit trail (``/audit``): admin only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy import select

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import errors
from orch.audit import Caller
from orch.config.schema import Settings
from orch.security import user_changes
from orch.security.rbac import Permission
from orch.security.users import create_user
from orch.storage.engine import session_scope
from orch.storage.models import ROLES, AuditRecord, User

router = APIRouter(tags=["users"])
USERNAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Role = Literal[ROLES]  # type: ignore[valid-type]


class UserOut(BaseModel):
    username: str
    role: str
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME)
    password: str = Field(min_length=1, max_length=1024)
    role: Role


class UserUpdate(BaseModel):
    role: Role | None = None
    is_active: StrictBool | None = None
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    unlock: StrictBool = Field(default=False, description="Forget the failed logins counted for this user from "
                         "every address, ending any wait they imposed (as `orch user unlock`)")


class UsersOut(BaseModel):
    users: list[UserOut]


class AuditEntry(BaseModel):
    id: int
    timestamp: datetime
    username: str
    action: str
    resource: str
    resource_id: str | None
    ip_address: str | None
    user_agent: str | None
    success: bool
    details: dict[str, Any]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    limit: int
    offset: int


def _out(user: User) -> UserOut:
    return UserOut(username=user.username, role=user.role, is_active=user.is_active,
                   last_login_at=user.last_login_at, created_at=user.created_at)


def _list(settings: Settings) -> UsersOut:
    with session_scope(settings.database) as session:
        return UsersOut(users=[_out(u) for u in session.scalars(select(User).order_by(User.username))])


@router.get("/users", response_model=UsersOut, responses=errors())
async def list_users(settings: SettingsDep,
                     principal: Annotated[Principal, Depends(require(Permission.USER_READ))]) -> UsersOut:
    return await run_in_threadpool(_list, settings)


def _create(settings: Settings, body: UserCreate, actor: str, caller: Caller) -> UserOut:
    with session_scope(settings.database, write_lock=True) as session:
        user = create_user(session, username=body.username, password=body.password, role=body.role,
                           policy=settings.security.password_policy, actor=actor, caller=caller)
        return _out(user)


@router.post("/users", status_code=201, response_model=UserOut, responses=errors(409))
async def add_user(body: UserCreate, settings: SettingsDep, caller: CallerDep,
                   principal: Annotated[Principal, Depends(require(Permission.USER_CREATE))]) -> UserOut:
    """Create a user; the password must meet ``security.password_policy`` (422 says what is missing)."""
    return await run_in_threadpool(_create, settings, body, principal.username, caller)


def _update(settings: Settings, username: str, body: UserUpdate, actor: str, caller: Caller) -> UserOut:
    with session_scope(settings.database, write_lock=True) as session:
        user = user_changes.update_user(session, username, actor=actor, policy=settings.security.password_policy,
                                        caller=caller, role=body.role, is_active=body.is_active,
                                        password=body.password, unlock=body.unlock)
        return _out(user)


@router.patch("/users/{username}", response_model=UserOut, responses=errors(404))
async def update_user(username: Annotated[str, Path(pattern=USERNAME)], body: UserUpdate, settings: SettingsDep,
                      caller: CallerDep, request: Request,
                      principal: Annotated[Principal, Depends(require(Permission.USER_UPDATE))]) -> UserOut:
    """Change a user's role, enable or disable them, set a new password, or end the waits failed logins
    imposed. A change of password, role or state revokes the user's existing tokens (401 from then on)."""
    updated = await run_in_threadpool(_update, settings, username, body, principal.username, caller)
    request.app.state.identity_cache.clear()  # the change applies to this process's next request
    return updated


def _audit(settings: Settings, username: str | None, action: str | None, resource: str | None,
           success: bool | None, since: datetime | None, until: datetime | None, limit: int,
           offset: int) -> AuditPage:
    query = select(AuditRecord).order_by(AuditRecord.id.desc())
    if username:
        query = query.where(AuditRecord.actor == username)
    if action:
        query = query.where(AuditRecord.action == action)
    if resource:
        query = query.where(AuditRecord.resource == resource)
    if success is not None:
        query = query.where(AuditRecord.success == success)
    if since:
        query = query.where(AuditRecord.timestamp >= since)
    if until:
        query = query.where(AuditRecord.timestamp < until)
    with session_scope(settings.database) as session:
        rows = session.scalars(query.offset(offset).limit(limit)).all()
        entries = [AuditEntry(id=r.id, timestamp=r.timestamp, username=r.actor, action=r.action, resource=r.resource,
                              resource_id=r.resource_id, ip_address=r.ip_address, user_agent=r.user_agent,
                              success=r.success, details=r.details or {}) for r in rows]
    return AuditPage(entries=entries, limit=limit, offset=offset)


@router.get("/audit", response_model=AuditPage, responses=errors())
async def audit(settings: SettingsDep, principal: Annotated[Principal, Depends(require(Permission.SYSTEM_ADMIN))],
                username: Annotated[str | None, Query(max_length=64)] = None,
                action: Annotated[str | None, Query(max_length=64)] = None,
                resource: Annotated[str | None, Query(max_length=64)] = None,
                success: bool | None = None, since: datetime | None = None, until: datetime | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> AuditPage:
    """Newest first; filter by user, action (``authenticate``, ``task.create`` ...), resource, outcome, time."""
    return await run_in_threadpool(_audit, settings, username, action, resource, success, since, until,
                                   limit, offset)
