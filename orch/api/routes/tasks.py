"""Dispatching tasks and managing them: ``/dispatch``, ``/dispatch/batch`` and ``/tasks``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from orch.api.deps import CallerDep, Principal, SettingsDep, require
from orch.api.schemas import TaskOut, errors
from orch.config.schema import Settings
from orch.dispatch.errors import InvalidTask, InvalidTransition, TaskNotFound
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import DispatchRequest, ValidTask, authorize, validate
from orch.security.flow_access import NotPermitted, record_refusal
from orch.security.rbac import Permission
from orch.storage.models import TASK_STATUSES

router = APIRouter(tags=["tasks"])
MAX_BATCH = 100


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


def _accepted(task: dict[str, Any], created: bool) -> DispatchAccepted:
    wait = task.get("estimated_wait_seconds")  # only new tasks have one; an earlier task: unknown
    start = (datetime.now(UTC) + timedelta(seconds=wait)).isoformat() if wait is not None else None
    return DispatchAccepted(task_id=task["task_id"], status=task["status"], core_id=task["core_id"],
                            priority=task["priority"], created_at=task["created_at"], estimated_start=start,
                            created=created)


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
            raise HTTPException(403, f"{where}{refusal}") from None


def _dispatch_one(settings: Settings, body: DispatchRequest, principal: Principal, caller: Any) -> DispatchAccepted:
    task = validate(body, settings)
    _authorize(settings, [task], principal, caller)
    queued, created = TaskQueue(settings).enqueue(task, principal.username, caller)
    return _accepted(queued, created)


@router.post("/dispatch", status_code=202, response_model=DispatchAccepted, responses=errors())
async def dispatch(body: DispatchRequest, settings: SettingsDep, caller: CallerDep,
                   principal: Annotated[Principal, Depends(require(Permission.TASK_CREATE))]) -> DispatchAccepted:
    """Queue a task for a core. 422 lists every problem; 429 + Retry-After when the queue is full; 403 when
    the task's effect needs more than the caller holds (``run-deployment`` of an admin-only flow).

    The same ``idempotency_key`` from the same user returns the earlier task instead of a new one.
    """
    return await run_in_threadpool(_dispatch_one, settings, body, principal, caller)


def _dispatch_batch(settings: Settings, body: BatchRequest, principal: Principal, caller: Any) -> BatchAccepted:
    valid, problems = [], []
    for index, request in enumerate(body.tasks):
        try:
            valid.append(validate(request, settings))
        except InvalidTask as exc:
            problems.extend(f"tasks.{index}.{line}" for line in exc.errors)
    if problems:
        raise InvalidTask(problems)
    _authorize(settings, valid, principal, caller)
    return BatchAccepted(tasks=[_accepted(task, created) for task, created
                                in TaskQueue(settings).enqueue_many(valid, principal.username, caller)])


@router.post("/dispatch/batch", status_code=202, response_model=BatchAccepted, responses=errors())
async def dispatch_batch(body: BatchRequest, settings: SettingsDep, caller: CallerDep,
                         principal: Annotated[Principal, Depends(require(Permission.TASK_CREATE))]
                         ) -> BatchAccepted:
    """Up to 100 tasks, all or nothing: one invalid task refuses the batch and lists every problem."""
    return await run_in_threadpool(_dispatch_batch, settings, body, principal, caller)


@router.get("/tasks", response_model=TaskPage, responses=errors())
async def list_tasks(settings: SettingsDep, principal: Annotated[Principal, Depends(require(Permission.TASK_READ))],
                     status: Annotated[Literal[TASK_STATUSES] | None, Query()] = None,  # type: ignore[valid-type]
                     core_id: Annotated[str | None, Query(max_length=64)] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> TaskPage:
    """Newest first. A core's ``system`` user sees only its own core's tasks."""
    if principal.core_id is not None and core_id not in (None, principal.core_id):
        return TaskPage(tasks=[], limit=limit, offset=offset)  # another core's tasks: none it may see
    if principal.core_id is not None:
        core_id = principal.core_id
    tasks = await run_in_threadpool(TaskQueue(settings).list, status=status, core_id=core_id, limit=limit,
                                    offset=offset)
    return TaskPage(tasks=tasks, limit=limit, offset=offset)


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
