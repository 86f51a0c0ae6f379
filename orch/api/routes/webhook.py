"""``POST /webhook``: signed event deliveries from cores and other systems.

Checks, in order: the ``X-Signature`` HMAC over ``f"{t}.{raw body}"`` with ``security.webhook_secret``
or a declared core's own ``dispatch.cores.<id>.webhook_secret`` (which one matched says who signed),
the timestamp (not older than ``security.webhook_tolerance_seconds``, not in the future), then the
delivery's digest is recorded in ``webhook_deliveries`` before its effect (:mod:`orch.api.deliveries`),
so a replay is refused on every API replica; when the effect is refused the record is removed again,
so the sender may retry.

Authority: the payload's ``task_id`` names the task, and the task names its core. A report signed with
a core's own secret may move only that core's tasks, and a core with its own secret refuses reports
signed with the shared one, as REST lets a core's user act only for that core (``require_core``). The
shared secret still answers ``ping`` and reports for cores without a secret of their own.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from orch.api.deps import caller_of
from orch.api.schemas import errors
from orch.audit import Caller
from orch.config.schema import Settings
from orch.dispatch.errors import InvalidRequest
from orch.dispatch.queue import TaskQueue
from orch.logging_config import get_logger
from orch.security.webhook_signature import SignatureError, verify

log = get_logger(__name__)

router = APIRouter(tags=["webhooks"])
TASK_EVENTS = {"task.started": "running", "task.progress": "running", "task.completed": "completed",
               "task.failed": "failed"}


class WebhookEvent(BaseModel):
    event: Literal["ping", "task.started", "task.progress", "task.completed", "task.failed"]
    task_id: str | None = Field(default=None, max_length=64)
    attempt: int | None = Field(default=None, ge=1)
    result: Any = None
    error: str | None = Field(default=None, max_length=10_000)


class WebhookAccepted(BaseModel):
    accepted: bool = True
    event: str
    task_status: str | None = None


def _signing_secrets(settings: Settings) -> dict[str | None, str]:
    """Who may sign: ``None`` for the shared secret (first, so a core secret equal to it fails closed),
    then every declared core with a secret of its own."""
    shared = settings.security.webhook_secret
    secrets: dict[str | None, str] = {None: shared.get_secret_value()} if shared is not None else {}
    for core_id, core in settings.dispatch.cores.items():
        if core.webhook_secret is not None:
            secrets[core_id] = core.webhook_secret.get_secret_value()
    return secrets


def _authorise(settings: Settings, signer: str | None, task_id: str, core_id: str) -> None:
    """403 unless ``signer`` may report on ``core_id``'s task: its own core, or the shared secret for a
    core without a secret of its own."""
    if signer is not None and signer != core_id:
        problem = f"signed with core {signer}'s secret, but task {task_id} belongs to core {core_id}"
    elif signer is None and core_id in settings.dispatch.cores \
            and settings.dispatch.cores[core_id].webhook_secret is not None:
        problem = (f"core {core_id} has its own secret (dispatch.cores.{core_id}.webhook_secret); the shared "
                   "secret cannot report on its tasks")
    else:
        return
    log.warning("webhook refused: %s", problem, extra={"event_type": "webhook.forbidden", "task_id": task_id,
                                                       "core_id": core_id, "signer": signer or "shared"})
    raise HTTPException(403, f"webhook refused: {problem}")


def _apply(settings: Settings, event: WebhookEvent, caller: Caller, signer: str | None) -> WebhookAccepted:
    """Report a core's ``task.*`` event to its task (the delivery is already remembered)."""
    queue, task_id = TaskQueue(settings), event.task_id or ""  # required for task.* (checked before)
    core_id = queue.get(task_id)["core_id"]
    _authorise(settings, signer, task_id, core_id)
    view = queue.report(task_id, core_id, TASK_EVENTS[event.event],
                        attempt=event.attempt, result=event.result, error=event.error, caller=caller)
    return WebhookAccepted(event=event.event, task_status=view["status"])


@router.post("/webhook", response_model=WebhookAccepted, responses=errors(404, 409))
async def webhook(request: Request) -> WebhookAccepted:
    """Accept a signed event: ``ping`` is answered; ``task.*`` events from a core update its task
    (``task.started``/``task.progress`` renew its lease). 401 for a bad, stale or future signature,
    403 for a report on another core's task (see the module's "Authority"), 409 for a replayed
    delivery or a report the task's state refuses."""
    app = request.app
    settings: Settings = app.state.settings
    metrics = app.state.metrics
    if not settings.features.enable_webhooks:
        raise HTTPException(404, "webhooks are turned off (features.enable_webhooks)")
    body = await request.body()
    secrets = _signing_secrets(settings)
    if not secrets:
        raise HTTPException(503, "security.webhook_secret is not configured")
    try:
        signer, digest = verify(secrets, request.headers.get("x-signature"), body,
                                tolerance=settings.security.webhook_tolerance_seconds)
    except SignatureError as exc:
        metrics.webhooks.labels("unknown", "bad_signature").inc()
        raise HTTPException(exc.status_code, f"webhook refused: {exc}") from None
    try:
        event = WebhookEvent.model_validate(json.loads(body))
    except (ValueError, ValidationError) as exc:
        metrics.webhooks.labels("unknown", "invalid").inc()
        lines = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()] \
            if isinstance(exc, ValidationError) else [f"body: not JSON ({exc})"]
        raise InvalidRequest(lines) from None
    if event.event != "ping" and not event.task_id:
        raise InvalidRequest([f"task_id: required for {event.event}"])
    deliveries = app.state.deliveries
    if not await deliveries.remember(digest, event.event):
        metrics.webhooks.labels(event.event, "replayed").inc()
        raise HTTPException(409, "webhook refused: this delivery was already accepted (replay)")
    if event.event == "ping":
        accepted = WebhookAccepted(event="ping")
    else:
        try:
            accepted = await run_in_threadpool(_apply, settings, event, caller_of(request), signer)
        except Exception:  # refused or failed: forget the delivery so that it may be sent again
            await deliveries.forget(digest)
            metrics.webhooks.labels(event.event, "refused").inc()
            raise
    metrics.webhooks.labels(event.event, "accepted").inc()
    return accepted
