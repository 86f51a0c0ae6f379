"""Pure-ASGI middleware: access log and metrics, body size limit, maintenance mode.

Pure ASGI rather than ``BaseHTTPMiddleware`` because the latter costs a task and a memory stream per
request and buffers streaming responses, which would break SSE and halve ``/health`` throughput.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orch.logging_config import get_logger

access_log = get_logger("orch.api.access")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAINTENANCE_EXEMPT = frozenset({"/auth/token"})  # logging in to read is still allowed
MAINTENANCE_RETRY_AFTER = 300


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


class AccessLogMiddleware:
    """One JSON log line and the HTTP metrics per request, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Any) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            self.metrics.observe_request(method, endpoint, status, elapsed)
            state = scope.get("state") or {}
            client = scope.get("client")
            access_log.info(
                "%s %s %s", method, endpoint, status,
                extra={"event_type": "http_request", "method": method, "endpoint": endpoint,
                       "path": scope["path"], "status": status, "duration_ms": round(elapsed * 1000, 2),
                       "client": client[0] if client else None, "user": state.get("user")})


class BodyLimitMiddleware:
    """413 for a body above ``limit`` bytes, whether it declares its length or streams it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes "
                                              "(api.max_body_bytes)"})


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing passes it on instead of calling it a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (api.max_body_bytes)")


class MaintenanceMiddleware:
    """With ``features.maintenance_mode`` on, changes answer 503 + Retry-After; reads and health work."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.settings.features.maintenance_mode
                and scope["method"] in WRITE_METHODS and scope["path"] not in MAINTENANCE_EXEMPT):
            await send_json(send, 503, {
                "detail": "ORCH-Next is in maintenance mode (MAINTENANCE_MODE=true): changes are refused until "
                          "it ends; reads and health keep working"},
                {"Retry-After": str(MAINTENANCE_RETRY_AFTER)})
            return
        await self.app(scope, receive, send)
