"""Cores: the overview and reservations (``/cores``), and outside cores that do the work themselves
(the ``external`` action): take work, report on it.

A core authenticates as a ``system`` user named like the core and may act only for itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require, require_core
from orch.api.routes.tasks import visible_task
from orch.api.schemas import TaskEventOut, TaskOut, errors
from orch.config.schema import Settings
from orch.dispatch.cores_view import cores_overview
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import IDENTIFIER, NOT_BOOL_OR_TEXT, JsonInt
from orch.dispatch.reservations import isolate_core, release_core
from orch.security.rbac import Permission

router = APIRouter(tags=["cores"])


class ClaimRequest(BaseModel):
    limit: JsonInt = Field(default=1, ge=1, le=50)


class ClaimedTask(BaseModel):
    task_id: str
    action: str
    params: dict[str, Any]
    priority: str
    timeout: int
    attempt: int


class ClaimResponse(BaseModel):
    tasks: list[ClaimedTask]


class StatusReport(BaseModel):
    status: Literal["running", "completed", "failed"] = Field(
        description="running: still working (renews the lease); completed/failed: the attempt ended")
    attempt: Annotated[int, Field(ge=1), NOT_BOOL_OR_TEXT] | None = Field(
        default=None, description="The attempt reported on; a report for an "
                                "attempt that is over is refused (409)")
    result: Any = None
    error: str | None = Field(default=None, max_length=10_000)


class ReservationOut(BaseModel):
    owner: str
    task_id: str | None
    expires_at: str
    kind: Literal["stay", "isolated"]


class CoreOut(BaseModel):
    core_id: str
    concurrency: int
    running: int
    queued: int
    reservation: ReservationOut | None


class CoresOut(BaseModel):
    cores: list[CoreOut]


class IsolateRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


CoreId = Annotated[str, Path(pattern=IDENTIFIER, max_length=64)]


class EventsOut(BaseModel):
    task_id: str
    events: list[TaskEventOut]


@router.post("/cores/{core_id}/claim", response_model=ClaimResponse, responses=errors())
async def claim(core_id: Annotated[str, Field(pattern=IDENTIFIER)], settings: SettingsDep,
                principal: Annotated[Principal, Depends(require(Permission.CORE_REPORT))],
                body: ClaimRequest | None = None) -> ClaimResponse:
    """Take up to ``limit`` of this core's queued ``external`` tasks, in queue order. Each stays this
    core's for its timeout; report with ``PUT /jobs/{id}/status`` (``running`` renews it)."""
    require_core(principal, core_id)
    limit = (body or ClaimRequest()).limit
    claims = await run_in_threadpool(TaskQueue(settings).claim, f"core:{core_id}", limit, external_core=core_id)
    return ClaimResponse(tasks=[ClaimedTask(task_id=c.task_id, action=c.action, params=c.params,
                                            priority=c.priority.label, timeout=c.timeout, attempt=c.attempt)
                                for c in claims])


def _report(settings: Settings, principal: Principal, task_id: str, body: StatusReport, caller: Any) -> dict[str, Any]:
    task = visible_task(settings, principal, task_id)
    require_core(principal, task["core_id"])
    return TaskQueue(settings).report(task_id, task["core_id"], body.status, attempt=body.attempt,
                                      result=body.result, error=body.error, caller=caller)


@router.put("/jobs/{task_id}/status", response_model=TaskOut, responses=errors(404, 409))
async def report_status(task_id: str, body: StatusReport, settings: SettingsDep, caller: CallerDep,
                        principal: Annotated[Principal, Depends(require(Permission.CORE_REPORT))]) -> dict[str, Any]:
    """A core's report on a task it claimed. 409 when the task is not running on this core or the
    attempt is over, so a late or repeated report changes nothing."""
    return await run_in_threadpool(_report, settings, principal, task_id, body, caller)


def _events(settings: Settings, principal: Principal, task_id: str) -> EventsOut:
    visible_task(settings, principal, task_id)
    return EventsOut(task_id=task_id, events=TaskQueue(settings).events(task_id))


@router.get("/jobs/{task_id}/events", response_model=EventsOut, responses=errors(404))
async def job_events(task_id: str, settings: SettingsDep,
                     principal: Annotated[Principal, Depends(require(Permission.TASK_READ))]) -> EventsOut:
    """Every status move of the task, oldest first."""
    return await run_in_threadpool(_events, settings, principal, task_id)


@router.get("/cores", response_model=CoresOut, responses=errors())
async def list_cores(settings: SettingsDep,
                     principal: Annotated[Principal, Depends(require(Permission.SYSTEM_MONITOR))]) -> CoresOut:
    """Every configured core and every core with tasks: its limit, load and reservation."""
    return CoresOut.model_validate({"cores": await run_in_threadpool(cores_overview, settings)})


def _core_change(change: Any, settings: Settings, core_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run a reservation change and return the core as it is after it (refusals map in orch.api.errors)."""
    change(settings, core_id, *args, **kwargs)
    [core] = cores_overview(settings, only=core_id)
    return core


@router.post("/cores/{core_id}/isolate", response_model=CoreOut, responses=errors(404))
async def isolate(core_id: CoreId, body: IsolateRequest, settings: SettingsDep, caller: CallerDep,
                  principal: Annotated[Principal, Depends(require(Permission.SYSTEM_ADMIN))]) -> dict[str, Any]:
    """Stop dispatching to the core until it is released (audited with the reason)."""
    return await run_in_threadpool(_core_change, isolate_core, settings, core_id, principal.username,
                                   actor=principal.username, reason=body.reason, caller=caller, known_only=True)


@router.post("/cores/{core_id}/release", response_model=CoreOut, responses=errors(404, 409))
async def release(core_id: CoreId, settings: SettingsDep, caller: CallerDep,
                  principal: Annotated[Principal, Depends(require(Permission.TASK_UPDATE))]) -> dict[str, Any]:
    """End the core's ``stay`` reservation, or its isolation (that needs ``system:admin``); 409 when
    nothing reserves it."""
    return await run_in_threadpool(_core_change, release_core, settings, core_id, principal.username, caller,
                                   may_end_isolation=principal.may(Permission.SYSTEM_ADMIN))
