"""Response bodies shared by several routes (request bodies live beside their route)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from orch.redaction import redact_structure

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

    @field_validator("params", "metadata", "result", "error")
    @classmethod
    def _masked(cls, value: Any) -> Any:
        """Every role reads a task masked by the rule SSE uses: params, metadata, results and errors
        carry passwords and database URLs the dispatcher needs but no reader should see. Only
        responses are built from this model; the queue and the claiming core keep the real values."""
        return redact_structure(value)


class TaskEventOut(BaseModel):
    event_id: int
    event_type: str
    timestamp: str | None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _masked(cls, value: dict[str, Any]) -> Any:
        """An event's data (metadata, errors) is masked exactly as the SSE stream masks it."""
        return redact_structure(value)


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
