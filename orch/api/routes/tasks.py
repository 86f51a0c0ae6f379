"""Dispatching tasks and managing them: ``/dispatch``, ``/dispatch/batch``, ``/tasks`` and ``/tasks/bulk``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import TaskOut, errors
from orch.config.schema import Settings
from orch.dispatch.bulk import MAX_BULK, bulk_change
from orch.dispatch.errors import InvalidRequest, InvalidTask, InvalidTransition, TaskNotFound
from orch.dispatch.new_tasks import MAX_BATCH, NewTasks, prepare
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import DispatchRequest, ValidTask, authorize, validate
from orch.dispatch.task_filter import TaskFilter
from orch.security.flow_access import NotPermitted, record_refusal
from orch.security.rbac import Permission
from orch.storage.models import TASK_STATUSES

router = APIRouter(tags=["tasks"])


class DispatchAccepted(BaseModel):
    task_id: str
    status: str = Field(description="'queued' for a new task; the current status when the idempotency key "
                                    "matched an earlier one")
    core_id: str
    priority: str
    created_at: str | None
    estimated_start: str | None = Field(description="When the task should start, from the work ahead of it "
                                                    "on its core; null for an earlier task (idempotency key)")
    created: bool = Field(description="False when an earlier request with the same idempotency_key made it")


class BatchRequest(BaseModel):
    tasks: list[DispatchRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchAccepted(BaseModel):
    tasks: list[DispatchAccepted]


class TaskPage(BaseModel):
    tasks: list[TaskOut]
    limit: int
    offset: int
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


def _accepted(task: dict[str, Any], created: bool, now: datetime) -> dict[str, Any]:
    """A :class:`DispatchAccepted` as a plain dict, which the route's response model validates and
    serialises in pydantic's core (a model built first in Python was validated again there)."""
    wait = task.get("estimated_wait_seconds")  # only new tasks have one; an earlier task: unknown
    return {"task_id": task["task_id"], "status": task["status"], "core_id": task["core_id"],
            "priority": task["priority"], "created_at": task["created_at"],
            "estimated_start": (now + timedelta(seconds=wait)).isoformat() if wait is not None else None,
            "created": created}


def _authorize(settings: Settings, tasks: list[ValidTask], principal: Principal, caller: Any) -> None:
    """403, audited as a refusal, when the caller may not cause what a task would do (an operator's
    ``run-deployment`` of ``restore``): what a task does needs the same permission as every other way
    of doing it. A batch is refused whole, as for any other problem in it."""
    for index, task in enumerate(tasks):
        try:
            authorize(task, principal.username, principal.role)
        except NotPermitted as refusal:
            record_refusal(settings.database, refusal, action="task.create", resource="task", resource_id=None,
                           caller=caller, details={"action": task.action, "core_id": task.core_id,
                                                   **({"index": index} if len(tasks) > 1 else {})})
            where = f"tasks.{index}: " if len(tasks) > 1 else ""
            raise HTTPException(refusal.status_code, f"{where}{refusal}") from None


@router.post("/dispatch", status_code=202, response_model=DispatchAccepted, responses=errors())
async def dispatch(body: DispatchRequest, request: Request, settings: SettingsDep, caller: CallerDep,
                   principal: Annotated[Principal, Depends(require(Permission.TASK_CREATE))]) -> dict[str, Any]:
    """Queue a task for a core. 422 lists every problem; 429 + Retry-After when the queue is full; 403 when
    the task's effect needs more than the caller holds (``run-deployment`` of an admin-only flow).

    The same ``idempotency_key`` from the same user returns the earlier task instead of a new one.
    Concurrent dispatches are committed together (:mod:`orch.api.dispatch_group`); each is answered
    once its group has committed.
    """
    task = validate(body, settings)
    if task.requirement is not None:  # a refusal is recorded in the database: off the event loop
        await run_in_threadpool(_authorize, settings, [task], principal, caller)
    queued, created = await request.app.state.dispatch_group.enqueue(task, principal.username, caller)
    return _accepted(queued, created, datetime.now(UTC))


def _ready_batch(settings: Settings, body: BatchRequest, principal: Principal, caller: Any) -> NewTasks:
    """Validate and authorise a batch and make its tasks ready (:mod:`orch.dispatch.new_tasks`): all of it
    in the request's own thread, before the batch joins a group commit."""
    valid, problems = [], []
    for index, request in enumerate(body.tasks):
        try:
            valid.append(validate(request, settings))
        except InvalidTask as exc:
            problems.extend(f"tasks.{index}.{line}" for line in exc.errors)
    if problems:
        raise InvalidTask(problems)
    _authorize(settings, valid, principal, caller)
    return prepare(settings, valid, principal.username)


@router.post("/dispatch/batch", status_code=202, response_model=BatchAccepted, responses=errors())
async def dispatch_batch(body: BatchRequest, request: Request, settings: SettingsDep, caller: CallerDep,
                         principal: Annotated[Principal, Depends(require(Permission.TASK_CREATE))]
                         ) -> dict[str, Any]:
    """Up to 100 tasks, all or nothing: one invalid task refuses the batch and lists every problem.
    Concurrent batches and dispatches are committed together (:mod:`orch.api.dispatch_group`)."""
    batch = await run_in_threadpool(_ready_batch, settings, body, principal, caller)
    accepted = await request.app.state.dispatch_group.enqueue_batch(batch, caller)
    now = datetime.now(UTC)
    return {"tasks": [_accepted(task, created, now) for task, created in accepted]}


@router.get("/tasks", response_model=TaskPage, responses=errors())
async def list_tasks(settings: SettingsDep, principal: Annotated[Principal, Depends(require(Permission.TASK_READ))],
                     status: Annotated[Literal[TASK_STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
                     core_id: Annotated[str | None, Query(max_length=64)] = None,
                     action: Annotated[str | None, Query(max_length=128)] = None,
                     owner: Annotated[str | None, Query(max_length=128)] = None,
                     since: Annotated[datetime | None, Query(description="created at or after (with a zone)")] = None,
                     until: Annotated[datetime | None, Query(description="created before (with a zone)")] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                     cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the page "
                                                         "before; not with offset")] = None) -> TaskPage:
    """Newest first; follow ``next_cursor`` for the next page (null on the last). A core's ``system`` user
    sees only its own core's tasks."""
    if cursor is not None and offset:
        raise InvalidRequest(["cursor: give either cursor or offset, not both"])
    if principal.core_id is not None and core_id not in (None, principal.core_id):
        return TaskPage(tasks=[], limit=limit, offset=offset, next_cursor=None)  # another core's: none it may see
    if principal.core_id is not None:
        core_id = principal.core_id
    task_filter = TaskFilter(status=status, core_id=core_id, action=action, owner=owner, since=since, until=until)
    tasks, next_cursor = await run_in_threadpool(TaskQueue(settings).page, task_filter, limit, cursor, offset)
    return TaskPage(tasks=tasks, limit=limit, offset=offset, next_cursor=next_cursor)


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal[TASK_STATUSES] | None = None  # type: ignore[valid-type]
    core_id: str | None = Field(default=None, max_length=64)
    action: str | None = Field(default=None, max_length=128)
    owner: str | None = Field(default=None, max_length=128)
    since: datetime | None = None
    until: datetime | None = None


class BulkByIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["cancel", "retry"]
    task_ids: list[Annotated[str, Field(min_length=1, max_length=36)]] = Field(min_length=1, max_length=MAX_BULK)


class BulkByFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["cancel", "retry"]
    filter: BulkFilter = Field(description="Without a status: the tasks the op can change")
    limit: int = Field(default=MAX_BULK, ge=1, le=MAX_BULK, description="At most this many, newest first")


class Skipped(BaseModel):
    task_id: str
    reason: str


class BulkResult(BaseModel):
    op: str
    matched: int
    changed: list[str]
    skipped: list[Skipped]


def _bulk(settings: Settings, body: BulkByIds | BulkByFilter, actor: str, caller: Any) -> dict[str, Any]:
    if isinstance(body, BulkByIds):
        return bulk_change(settings, body.op, actor, caller, task_ids=body.task_ids)
    return bulk_change(settings, body.op, actor, caller, task_filter=TaskFilter(**body.filter.model_dump()),
                       limit=body.limit)


@router.post("/tasks/bulk", response_model=BulkResult, responses=errors())
async def bulk_tasks(body: BulkByIds | BulkByFilter, settings: SettingsDep, caller: CallerDep,
                     principal: Annotated[Principal, Depends(require(Permission.TASK_UPDATE))]) -> dict[str, Any]:
    """Cancel or retry many tasks, named by ``task_ids`` or matched by ``filter``, each audited as its
    single-task route audits it; a task the op does not apply to is listed in ``skipped`` with the reason."""
    return await run_in_threadpool(_bulk, settings, body, principal.username, caller)


def visible_task(settings: Settings, principal: Principal, task_id: str) -> dict[str, Any]:
    """The task, or 404 when it does not exist or belongs to another core than the calling core."""
    task = TaskQueue(settings).get(task_id)
    if principal.core_id is not None and task["core_id"] != principal.core_id:
        raise TaskNotFound(task_id)
    return task


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=errors(404))
async def get_task(task_id: str, settings: SettingsDep,
                   principal: Annotated[Principal, Depends(require(Permission.TASK_READ))]) -> dict[str, Any]:
    return await run_in_threadpool(visible_task, settings, principal, task_id)


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut, responses=errors(404, 409))
async def cancel_task(task_id: str, settings: SettingsDep, caller: CallerDep,
                      principal: Annotated[Principal, Depends(require(Permission.TASK_UPDATE))]) -> dict[str, Any]:
    """Cancel a queued or running task; 409 when it has already ended."""
    return await run_in_threadpool(TaskQueue(settings).cancel, task_id, principal.username, caller)


def _retry(settings: Settings, task_id: str, actor: str, caller: Any) -> dict[str, Any]:
    queue = TaskQueue(settings)
    task = queue.get(task_id)
    if not queue.reset_failed(actor, [task_id], caller):
        raise InvalidTransition(f"task {task_id} is {task['status']}; only failed or timed-out tasks are retried")
    return queue.get(task_id)


@router.post("/tasks/{task_id}/retry", response_model=TaskOut, responses=errors(404, 409))
async def retry_task(task_id: str, settings: SettingsDep, caller: CallerDep,
                     principal: Annotated[Principal, Depends(require(Permission.TASK_UPDATE))]) -> dict[str, Any]:
    """Queue a failed or timed-out task again with fresh attempts; 409 otherwise."""
    return await run_in_threadpool(_retry, settings, task_id, principal.username, caller)
