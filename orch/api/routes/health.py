"""``/health``, ``/healthz`` and the ``/events/health`` heartbeat stream.

``/health`` checks the database, Prefect, the dispatchers (online workers of the ORCH work pool) and
the monitoring sweeps. Each check's answer is reused for ``api.health_cache_seconds``: a load balancer
probing ten times a second, or a benchmark at thousands a second, costs one check per period, and a
slow Prefect cannot make the API's own health endpoint slow for everyone.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from orch import __version__
from orch.api.deps import authorize, oauth2_scheme
from orch.api.events import STREAM_RETRY_AFTER, StreamSlots
from orch.api.schemas import ErrorBody
from orch.config.schema import Settings
from orch.prefect_api import online_workers, prefect_readiness
from orch.security.rbac import Permission
from orch.stack.pools import PROCESS_POOL
from orch.storage.engine import DatabaseCorrupt, is_corruption_error, known_corruption, session_scope
from orch.storage.health import ping

router = APIRouter(tags=["health"])
Status = Literal["ok", "degraded", "down", "disabled", "unknown"]
ANONYMOUS = "anonymous"  # the one key of /events/health's stream slots


class ComponentHealth(BaseModel):
    status: Status
    detail: str | None = None
    latency_ms: float | None = None


class HostHealth(BaseModel):
    host: str
    last_sweep: str
    down: bool
    alerts: list[str]


class HealthDetails(BaseModel):
    queue_depth: dict[str, int]
    active_tasks: int
    active_locks: int
    total_requests: int
    hosts: list[HostHealth] = []


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
    timestamp: datetime
    version: str
    uptime_seconds: float
    components: dict[str, ComponentHealth]
    details: HealthDetails | None = None


class _Cache:
    """The last answer of the component checks. A stale answer is served while one background refresh
    runs, so probes never queue behind a slow check; only the very first request waits for one.

    The overall status and the components' JSON are worked out once per refresh, not per probe."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.value: dict[str, ComponentHealth] | None = None
        self.status: Literal["ok", "degraded", "down"] = "ok"
        self.components_json = b"{}"
        self.at = 0.0
        self.refreshing: asyncio.Task[None] | None = None

    async def get(self, settings: Settings) -> dict[str, ComponentHealth]:
        if self.value is None or time.monotonic() - self.at >= self.ttl:
            if self.refreshing is None or self.refreshing.done():
                self.refreshing = asyncio.get_running_loop().create_task(self._refresh(settings))
            if self.value is None:
                await asyncio.shield(self.refreshing)
        assert self.value is not None
        return self.value

    async def _refresh(self, settings: Settings) -> None:
        value = await run_in_threadpool(_check_all, settings)
        self.status = _overall(value)
        self.components_json = _COMPONENTS.dump_json(value, exclude_none=True)
        self.value, self.at = value, time.monotonic()


_COMPONENTS = TypeAdapter(dict[str, ComponentHealth])


def _overall(components: dict[str, ComponentHealth]) -> Literal["ok", "degraded", "down"]:
    if components["database"].status != "ok":
        return "down"
    if any(c.status in ("degraded", "down") for c in components.values()):
        return "degraded"
    return "ok"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness only: the process answers. Never touches the database."""
    return {"status": "ok"}


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True,
            responses={503: {"model": HealthResponse, "description": "down: the database is unusable"}})
async def health(request: Request,
                 detailed: bool = Query(False, description="Add queue, task, lock and request counts "
                                        "(needs a token with system:monitor).")) -> Response:
    """'down' (503) without the database; 'degraded' (200) when Prefect, the dispatchers or the
    monitor are not well, because the API still accepts work that will run once they are back.

    503 lets ``curl -f /health`` (the guide's recovery scripts) and load balancers treat it as failed.
    The bearer token is read only for ``detailed=true``: probes, thousands a second, skip that work.
    """
    app = request.app
    settings: Settings = app.state.settings
    cache: _Cache = app.state.health_cache
    uptime = round(time.monotonic() - app.state.started, 1)
    if not detailed:  # the probe path: the cached components' JSON inside a small envelope
        await cache.get(settings)
        head = json.dumps({"status": cache.status, "timestamp": datetime.now(UTC).isoformat(),
                           "version": __version__, "uptime_seconds": uptime}, separators=(",", ":"))
        return Response(content=head[:-1].encode() + b',"components":' + cache.components_json + b"}",
                        media_type="application/json", status_code=503 if cache.status == "down" else 200)
    await authorize(request, await oauth2_scheme(request), Permission.SYSTEM_MONITOR)
    body = await detailed_health(app)
    return Response(content=body.model_dump_json(exclude_none=True), media_type="application/json",
                    status_code=503 if cache.status == "down" else 200)


async def detailed_health(app: FastAPI) -> HealthResponse:
    """What ``GET /health?detailed=true`` answers (the console's overview shows the same): the cached
    component checks with the queue, task, lock and request counts. The caller checks the permission."""
    settings: Settings = app.state.settings
    cache: _Cache = app.state.health_cache
    components = await cache.get(settings)
    try:
        details = await run_in_threadpool(_details, settings, app.state.metrics.total)
    except SQLAlchemyError as exc:
        if not is_corruption_error(exc):
            raise
        # A damaged file: the counts cannot be read, and saying which component is down matters more.
        # The failing statement left the corruption marker: the database component says so from the
        # cache's next refresh (api.health_cache_seconds) on.
        details = None
    return HealthResponse(status=cache.status, timestamp=datetime.now(UTC), version=__version__,
                          uptime_seconds=round(time.monotonic() - app.state.started, 1), components=components,
                          details=details)


@router.get("/events/health", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "heartbeat stream"},
                       503: {"model": ErrorBody, "description": "api.max_anonymous_streams streams are open "
                                                                 "(Retry-After)"}})
async def health_events(request: Request) -> StreamingResponse:
    """A heartbeat every ``api.sse_heartbeat_seconds``: proves the stream path (proxies, buffering) works.

    Anyone may open it, so the open streams are capped (``api.max_anonymous_streams`` per process)."""
    interval = request.app.state.settings.api.sse_heartbeat_seconds
    started = request.app.state.started
    slots: StreamSlots = request.app.state.anonymous_streams
    if not slots.take(ANONYMOUS):
        raise HTTPException(503, f"{slots.limit} anonymous event streams are open (api.max_anonymous_streams); "
                                 "retry later", headers={"Retry-After": str(STREAM_RETRY_AFTER)})

    async def beats() -> AsyncIterator[bytes]:
        sequence = 0
        while True:
            sequence += 1
            data = json.dumps({"status": "ok", "sequence": sequence,
                               "timestamp": datetime.now(UTC).isoformat(),
                               "uptime_seconds": round(time.monotonic() - started, 1)})
            yield format_sse_event(data_str=data, event="heartbeat", id=str(sequence))
            await asyncio.sleep(interval)

    return slots.response(ANONYMOUS, beats())


def _check_all(settings: Settings) -> dict[str, ComponentHealth]:
    return {"database": _database(settings), "prefect": _prefect(settings),
            "dispatcher": _dispatcher(settings), "monitor": _monitor(settings)}


def _database(settings: Settings) -> ComponentHealth:
    """The database answers, and no check has found its file damaged. The damage is read from the
    marker the sweep's quick_check (or start-up, or a failing statement) left: scanning the file per
    probe would cost a full read of it every ``api.health_cache_seconds``."""
    damage = known_corruption(settings.database.url or "")
    if damage is not None:
        return ComponentHealth(status="down", detail=str(DatabaseCorrupt(settings.database.url or "", damage)))
    started = time.perf_counter()
    try:
        ping(settings.database)
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a status, not a 500
        return ComponentHealth(status="down", detail=str(exc))
    return ComponentHealth(status="ok", latency_ms=round((time.perf_counter() - started) * 1000, 1))


def _prefect(settings: Settings) -> ComponentHealth:
    ready = prefect_readiness(settings.prefect, timeout=2.0)
    if ready.ready:
        return ComponentHealth(status="ok", latency_ms=ready.latency_ms)
    return ComponentHealth(status="degraded", detail=ready.problem, latency_ms=ready.latency_ms)


def _dispatcher(settings: Settings) -> ComponentHealth:
    """Dispatchers run inside the workers of the ORCH work pool; none online means nothing runs."""
    count = online_workers(settings.prefect, PROCESS_POOL, timeout=2.0)
    if count == 0:
        return ComponentHealth(status="degraded", detail=f"no online worker in work pool {PROCESS_POOL!r}; "
                                                         "queued tasks wait")
    return ComponentHealth(status="ok", detail=f"{count} online worker(s)")


def _monitor(settings: Settings) -> ComponentHealth:
    if not settings.features.enable_monitoring:
        return ComponentHealth(status="disabled", detail="features.enable_monitoring is false")
    from orch.monitoring.status import sweep_status

    try:
        return ComponentHealth(**sweep_status(settings))
    except Exception as exc:  # noqa: BLE001 - no database: the database component says so; this is unknown
        return ComponentHealth(status="unknown", detail=f"cannot read monitoring samples: {exc.__class__.__name__}")


def _details(settings: Settings, total_requests: int) -> HealthDetails:
    from orch.dispatch.queue import TaskQueue
    from orch.storage.models import ResourceLock, Task

    depth = TaskQueue(settings).depth()
    with session_scope(settings.database) as session:
        running = session.scalar(select(func.count()).select_from(Task).where(Task.status == "running")) or 0
        locks = session.scalar(select(func.count()).select_from(ResourceLock)) or 0
    return HealthDetails(queue_depth=depth, active_tasks=int(running), active_locks=int(locks),
                         total_requests=total_requests, hosts=[HostHealth(**host) for host in _hosts(settings)])


def _hosts(settings: Settings) -> list[dict]:
    """Every host seen sweeping in the last day: its last sweep, whether it is down, its active alerts."""
    if not settings.features.enable_monitoring:
        return []
    from orch.monitoring.hosts import hosts_view

    return hosts_view(settings)

