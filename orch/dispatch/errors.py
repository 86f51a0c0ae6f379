"""What can go wrong when dispatching, each a one-line message an operator or API client can act on."""

from __future__ import annotations

from typing import Any

from orch.errors import OrchError


class DispatchError(OrchError):
    """Base of dispatch errors."""


class InvalidRequest(DispatchError):
    """A request ORCH cannot act on (a task filter, a page cursor, a webhook event); ``errors`` lists every
    problem with its field. Its ``detail`` is the app's own for a body or query it refuses."""

    status_code = 422
    detail = "invalid request"

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(f"{self.detail}: " + "; ".join(errors))

    def http_body(self) -> dict[str, Any]:
        return {"detail": self.detail, "errors": self.errors}


class InvalidTask(InvalidRequest):
    """The request is not a task ORCH will queue; ``errors`` lists every problem with its field."""

    detail = "invalid task"


class QueueFull(DispatchError):
    """Backpressure: the queue is at ``dispatch.max_queue_depth``; try again after ``retry_after`` s."""

    status_code = 429

    def __init__(self, depth: int, limit: int, retry_after: int) -> None:
        """``depth``: the queued tasks, exactly (the counts the database keeps, ``core_load``)."""
        self.depth, self.limit, self.retry_after = depth, limit, retry_after
        super().__init__(f"queue full: {depth} tasks queued (limit {limit}); retry after {retry_after} s")


class TaskNotFound(DispatchError):
    status_code = 404

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task {task_id}")


class InvalidTransition(DispatchError):
    """E.g. cancelling a task that already completed."""

    status_code = 409
