"""Response bodies shared by several routes (request bodies live beside their route)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MAX_ID = 2**63 - 1  # the largest id a database column holds: a larger number is a 422, not a 500


class ErrorBody(BaseModel):
    detail: str
    errors: list[str] | None = None


class TaskOut(BaseModel):
    task_id: str
    core_id: str
    action: str
    params: dict[str, Any]
    priority: str
    timeout: int
    stay: bool
    metadata: dict[str, Any]
    locks: list[str] | None
    idempotency_key: str | None
    owner: str
    max_retries: int
    status: str
    attempts: int
    result: Any = None
    error: str | None = None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None


class TaskEventOut(BaseModel):
    event_id: int
    event_type: str
    timestamp: str | None
    data: dict[str, Any] = Field(default_factory=dict)


# Documented on every route so clients (and the schema checks) know the error shapes.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in {
        401: "not authenticated, or the token is invalid, expired or its user disabled",
        403: "the caller's role lacks the permission this route needs",
        413: "request body too large",
        422: "invalid request; `errors` lists every problem",
        429: "rate limited (Retry-After says when to retry)",
        503: "maintenance mode or database unavailable (Retry-After)",
    }.items()
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """ERRORS plus route-specific codes such as 404 and 409."""
    extra = {404: "no such resource", 409: "conflicts with the resource's current state"}
    out = dict(ERRORS)
    for code in codes:
        out[code] = {"model": ErrorBody, "description": extra.get(code, "error")}
    return out
