"""Outside cores that do the work themselves (the ``external`` action): take work, report on it.

A core authenticates as a ``system`` user named like the core and may act only for itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require, require_core
from orch.api.routes.tasks import visible_task
from orch.api.schemas import TaskEventOut, TaskOut, errors
from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import IDENTIFIER, NOT_BOOL_OR_TEXT, JsonInt
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
