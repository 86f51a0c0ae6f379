"""``GET /sse/events``: task and alert events as Server-Sent Events, filtered by what the caller may read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from orch.api.deps import Principal, require
from orch.api.events import STREAM_RETRY_AFTER, Event, StreamSlots, parse_cursor, stream
from orch.api.schemas import errors
from orch.security.rbac import Permission

router = APIRouter(tags=["events"])


@router.get("/sse/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "event stream"}, **errors()})
async def sse_events(request: Request,
                     principal: Annotated[Principal, Depends(require(Permission.TASK_READ, query_token=True))],
                     last_event_id: Annotated[str | None, Header(max_length=64)] = None,
                     kinds: Annotated[str, Query(pattern=r"^(task|alert)(,(task|alert))?$",
                                                 description="task, alert or both")] = "task,alert",
                     task_id: Annotated[str | None, Query(max_length=64)] = None) -> StreamingResponse:
    """Events as they happen (``id`` is a resume cursor: reconnect with ``Last-Event-ID`` to get what was
    missed). Alerts need ``system:monitor``; a core's ``system`` user sees only its own core's tasks.
    A ``: keep-alive`` comment is sent every ``api.sse_heartbeat_seconds``. One user may hold
    ``api.max_streams_per_user`` streams per API process at once (429 beyond)."""
    app = request.app
    settings = app.state.settings
    if not settings.features.enable_sse:
        raise HTTPException(404, "SSE is turned off (features.enable_sse)")
    wanted = set(kinds.split(","))
    if not principal.may(Permission.SYSTEM_MONITOR):
        wanted.discard("alert")
    core = principal.core_id

    def accepts(event: Event) -> bool:
        if event.kind not in wanted:
            return False
        if event.kind == "task":
            return (core is None or event.core_id == core) and (task_id is None or event.payload["task_id"] == task_id)
        return True

    hub = app.state.event_hub
    metrics = app.state.metrics
    slots: StreamSlots = app.state.user_streams
    if not slots.take(principal.username):
        raise HTTPException(429, f"user {principal.username!r} has {slots.limit} event streams open "
                                 "(api.max_streams_per_user); close one or retry later",
                            headers={"Retry-After": str(STREAM_RETRY_AFTER)})
    subscriber, missed = await hub.subscribe(accepts, parse_cursor(last_event_id))
    metrics.sse_connections.inc()

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in stream(hub, subscriber, missed, settings.api.sse_heartbeat_seconds,
                                      metrics.sse_messages.inc):
                yield chunk
        finally:
            metrics.sse_connections.dec()

    return slots.response(principal.username, body())
