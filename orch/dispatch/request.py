"""A request to dispatch a task, validated completely before anything is written.

The body is the original system's (``coreId`` or ``core_id``, ``stay``, ``priority``, ``timeout``,
``metadata``) plus ``action``, ``params``, ``locks``, ``idempotency_key`` and ``max_retries``. Without
an ``action`` the task is ``external``: as in the original, the core does the work and reports back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)

from orch.config.schema import DatabaseSettings, Settings
from orch.dispatch.actions import registry
from orch.dispatch.errors import InvalidTask
from orch.dispatch.ordering import Priority
from orch.security.flow_access import Requirement, check, role_of_owner

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
LOCK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
MAX_METADATA_BYTES = 8192
NUL_PROBLEM = "contains a NUL character, which cannot be stored"
NON_FINITE_PROBLEM = "must be a finite number (JSON has no NaN or Infinity, and a double holds at most 1.8e308)"


def _not_bool_or_text(value: object) -> object:
    """JSON Schema's integer is 3 or 3.0, never ``true`` or ``"3"``, which pydantic's lax int takes (and
    its strict int refuses 3.0, which the schema allows)."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer, not a boolean or a string")
    return value


# An integer as request bodies' JSON has it. In an optional field, put the bounds inside the Annotated
# (``Annotated[int, Field(le=9), NOT_BOOL_OR_TEXT] | None``): outside, pydantic documents them as "le".
NOT_BOOL_OR_TEXT = BeforeValidator(_not_bool_or_text)
JsonInt = Annotated[int, NOT_BOOL_OR_TEXT]


class TaskMetadata(BaseModel):
    """Who and what a task is for. Free-form keys beside these are kept (and size-capped)."""

    model_config = ConfigDict(extra="allow")
    source: str | None = Field(default=None, max_length=128)
    user_id: str | None = Field(default=None, max_length=128)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, tags: list[str]) -> list[str]:
        if any(not tag or len(tag) > 64 for tag in tags):
            raise ValueError("each tag must be 1-64 characters")
        return tags


class DispatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    core_id: str = Field(validation_alias=AliasChoices("core_id", "coreId"), pattern=IDENTIFIER)
    action: str = "external"
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    timeout: Annotated[int, Field(gt=0, le=7 * 86400), NOT_BOOL_OR_TEXT] | None = Field(
        default=None, description="Seconds; default features.task_timeout_default.")
    stay: StrictBool = False  # strict: `1`/`"yes"` is a mistake, not true (nor `true` a 1)
    metadata: TaskMetadata = Field(default_factory=TaskMetadata)
    locks: list[Annotated[str, Field(pattern=LOCK_NAME)]] = Field(default_factory=list, max_length=16,
                                                                 json_schema_extra={"uniqueItems": True})
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    max_retries: Annotated[int, Field(ge=0, le=20), NOT_BOOL_OR_TEXT] | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, value: object) -> Priority:
        return Priority.parse(value)

    @field_validator("locks")
    @classmethod
    def _locks(cls, locks: list[str]) -> list[str]:
        import re

        bad = [name for name in locks if not re.match(LOCK_NAME, name)]
        if bad:
            raise ValueError(f"lock names must match {LOCK_NAME}: {', '.join(map(repr, bad))}")
        if len(set(locks)) != len(locks):
            raise ValueError("must not name a lock twice")
        return sorted(locks)  # one global order: two tasks never wait on each other's locks


@dataclass(frozen=True)
class ValidTask:
    """A request that passed every check, with defaults filled from configuration."""

    core_id: str
    action: str
    params: dict[str, Any]
    priority: Priority
    timeout: int
    stay: bool
    metadata: dict[str, Any]
    locks: list[str]
    idempotency_key: str | None
    max_retries: int
    requirement: Requirement | None = None  # what the owner must be allowed beyond task:create


def validate(body: dict[str, Any] | DispatchRequest, settings: Settings) -> ValidTask:
    """Every problem at once, as ``field: problem`` lines (raises :class:`InvalidTask`)."""
    errors: list[str] = []
    try:
        request = body if isinstance(body, DispatchRequest) else DispatchRequest.model_validate(body)
    except ValidationError as exc:
        raise InvalidTask(_lines(exc)) from None

    dispatch = settings.dispatch
    if dispatch.cores and request.core_id not in dispatch.cores:
        errors.append(f"core_id: unknown core {request.core_id!r}; declared: {', '.join(sorted(dispatch.cores))}")
    spec = registry().get(request.action)
    params: dict[str, Any] = request.params
    requirement: Requirement | None = None
    if spec is None:
        errors.append(f"action: unknown action {request.action!r}; known: {', '.join(sorted(registry()))}")
    else:
        try:
            parsed = spec.params.model_validate(request.params)
            errors.extend(spec.check(parsed, dispatch))
            params = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
            requirement = spec.needs(parsed)
        except ValidationError as exc:
            errors.extend(f"params.{line}" if not line.startswith("params") else line for line in _lines(exc))
    params_json = _json(request.params)
    if len(params_json) > dispatch.max_params_bytes:
        errors.append(f"params: {len(params_json)} bytes of JSON, more than "
                      f"dispatch.max_params_bytes ({dispatch.max_params_bytes})")
    metadata = request.metadata.model_dump(exclude_none=True)  # free-form keys as sent: NaN stays NaN, refused below
    metadata_json = _json(metadata)
    if len(metadata_json) > MAX_METADATA_BYTES:
        errors.append(f"metadata: more than {MAX_METADATA_BYTES} bytes of JSON")
    for name, value, text in (("params", request.params, params_json), ("metadata", metadata, metadata_json)):
        if b"\\u0000" in text and (found := value_place(value, name, has_nul)) is not None:
            errors.append(f"{found[0].replace(chr(0), '')}: {NUL_PROBLEM}")
        if (b"NaN" in text or b"Infinity" in text) and (found := value_place(value, name, non_finite)) is not None:
            errors.append(f"{found[0]}: {NON_FINITE_PROBLEM}")
    if errors:
        raise InvalidTask(errors)
    return ValidTask(
        core_id=request.core_id, action=request.action, params=params, priority=request.priority,
        timeout=request.timeout or settings.features.task_timeout_default, stay=request.stay,
        metadata=metadata, locks=request.locks, idempotency_key=request.idempotency_key,
        max_retries=dispatch.default_max_retries if request.max_retries is None else request.max_retries,
        requirement=requirement)


def authorize(task: ValidTask, owner: str, role: str | None) -> None:
    """When dispatched: raise :class:`~orch.security.flow_access.NotPermitted` unless ``owner`` (with
    ``role``) may cause the task's effect; ``task:create`` itself is the caller's business (the route's)."""
    if task.requirement is not None:
        check(owner, role, task.requirement)


def authorize_run(database: DatabaseSettings, task_id: str, requirement: Requirement) -> None:
    """When it runs: the same check against the role the task's owner holds *now*, read from the
    database, so an owner demoted or disabled since dispatch does not start what only the old role could."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import Task

    with session_scope(database) as session:
        owner = session.scalar(select(Task.owner).where(Task.task_id == task_id)) or "unknown"
    check(owner, role_of_owner(database, owner), requirement)


def _json(value: Any) -> bytes:
    """``value`` as compact JSON, as its size is counted (a NUL is written ``\\u0000``)."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def has_nul(value: object) -> bool:
    """Whether ``value`` is text holding a NUL: PostgreSQL's text and ``jsonb`` cannot, and Prefect's
    parameters are ``jsonb``. Checked where the API and the CLI both pass (:func:`validate`; the API's
    middleware also refuses such a body before any route): a task holding one was queued and failed only
    when it ran."""
    return isinstance(value, str) and "\x00" in value


def non_finite(value: object) -> bool:
    """Whether ``value`` is NaN, Infinity or -Infinity. Python's JSON parser reads them (the API's bodies, the
    CLI's ``--params-json``), and a number beyond a double's range (``1e309``) as Infinity; JSON has no such
    numbers, and they were stored as null."""
    return isinstance(value, float) and not math.isfinite(value)


def value_place(value: Any, path: str, bad: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """``(path.<key>..., what)`` of the first key or scalar in ``value`` for which ``bad`` holds, or None."""
    if not isinstance(value, dict | list):
        return (path, value) if bad(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        where = f"{path}.{key}"
        if isinstance(key, str) and bad(key):
            return where, key
        if (found := value_place(item, where, bad)) is not None:
            return found
    return None


def _lines(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        elif message.startswith("Input should be "):
            message = "must be " + message[len("Input should be "):]
        elif message.startswith("String should match pattern "):
            message = "must match " + message[len("String should match pattern "):]
        lines.append(f"{key}: {message}")
    return lines
