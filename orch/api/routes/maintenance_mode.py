"""Maintenance mode as a run-time switch: ``GET`` and ``PUT /maintenance-mode``.

Reading needs ``system:monitor``; turning it on or off needs ``system:admin`` and is audited. ``PUT``
works while maintenance mode is on (the maintenance middleware lets it through), or it could never end.
The route uses the app's own switch, so this replica refuses changes from the next request on; the
others follow within a second (:mod:`orch.maintenance_mode`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch import maintenance_mode
from orch.api.deps import CallerDep, Principal, require
from orch.api.schemas import errors
from orch.security.rbac import Permission

router = APIRouter(tags=["maintenance"])


class ModeIn(BaseModel):
    model_config = {"extra": "forbid"}

    on: bool
    reason: str = Field(default="", max_length=maintenance_mode.MAX_REASON,
                        description="Why (shown in the 503 answers and kept in the audit trail).")


class ModeOut(BaseModel):
    on: bool
    since: str | None = Field(description="When the current value was set (ISO 8601), if it was.")
    by: str | None = Field(description="Who set it (`MAINTENANCE_MODE` when only the environment forces it).")
    reason: str
    forced_by_env: bool = Field(description="MAINTENANCE_MODE=true in this replica's environment: it cannot be "
                                            "turned off here.")


@router.get("/maintenance-mode", response_model=ModeOut, responses=errors())
async def get_mode(request: Request,
                   principal: Annotated[Principal, Depends(require(Permission.SYSTEM_MONITOR))]) -> dict[str, Any]:
    switch = maintenance_mode.for_app(request.app)
    return switch.cached() or await run_in_threadpool(switch.state)


@router.put("/maintenance-mode", response_model=ModeOut, responses=errors(409))
async def put_mode(body: ModeIn, request: Request, caller: CallerDep,
                   principal: Annotated[Principal, Depends(require(Permission.SYSTEM_ADMIN))]) -> dict[str, Any]:
    """Turn maintenance mode on (changes answer 503 everywhere, healing pauses) or off; 409 when this
    replica's environment forces it on."""
    switch = maintenance_mode.for_app(request.app)
    return await run_in_threadpool(switch.set, body.on, principal.username, body.reason, caller)
