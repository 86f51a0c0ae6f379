"""``GET /locks`` (who holds what, who waits) and ``DELETE /locks/{resource}`` (admin force-release)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import errors
from orch.dispatch.locks import LockManager
from orch.dispatch.request import LOCK_NAME
from orch.security.rbac import Permission

router = APIRouter(tags=["locks"])


class LocksOut(BaseModel):
    locks: list[dict[str, Any]]


class Released(BaseModel):
    resource: str
    released: bool


@router.get("/locks", response_model=LocksOut, responses=errors())
async def list_locks(settings: SettingsDep,
                     principal: Annotated[Principal, Depends(require(Permission.SYSTEM_MONITOR))]) -> LocksOut:
    return LocksOut(locks=await run_in_threadpool(LockManager(settings).list))


@router.delete("/locks/{resource:path}", response_model=Released, responses=errors(404))
async def release_lock(resource: Annotated[str, Path(pattern=LOCK_NAME)], settings: SettingsDep,
                       caller: CallerDep,
                       principal: Annotated[Principal, Depends(require(Permission.SYSTEM_ADMIN))]) -> Released:
    """Force-release a lock whatever holds it (audited); 404 when nothing holds it."""
    released = await run_in_threadpool(LockManager(settings).release, resource, actor=principal.username,
                                       caller=caller)
    if not released:
        raise HTTPException(404, f"no lock is held on {resource!r}")
    return Released(resource=resource, released=True)
