"""``/health`` and ``/healthz``: liveness for load balancers, component status for operators."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from orch import __version__
from orch.prefect_api import prefect_readiness
from orch.storage.health import integrity_check

router = APIRouter(tags=["health"])
Status = Literal["ok", "degraded", "down"]


class ComponentHealth(BaseModel):
    status: Status
    detail: str | None = None
    latency_ms: float | None = None


class HealthResponse(BaseModel):
    status: Status
    timestamp: datetime
    version: str
    uptime_seconds: float
    components: dict[str, ComponentHealth]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness only: the process answers. Never touches the database."""
    return {"status": "ok"}


@router.get("/health", response_model=HealthResponse,
            responses={503: {"model": HealthResponse, "description": "down: the database is unusable"}})
async def health(request: Request, response: Response) -> HealthResponse:
    """The API is 'down' without its database and 'degraded' without Prefect (tasks queue, runs wait).

    'down' answers 503 so that ``curl -f /health`` (the guide's recovery scripts) and load balancers
    treat it as failed; 'degraded' still answers 200 because the API can accept work.
    """
    settings = request.app.state.settings
    database, prefect = await run_in_threadpool(_database, settings), await run_in_threadpool(
        _prefect, settings)
    components = {"database": database, "prefect": prefect}
    status: Status = "ok"
    if database.status != "ok":
        status = "down"
    elif prefect.status != "ok":
        status = "degraded"
    if status == "down":
        response.status_code = 503
    return HealthResponse(
        status=status,
        timestamp=datetime.now(timezone.utc),
        version=__version__,
        uptime_seconds=round(time.monotonic() - request.app.state.started, 1),
        components=components,
    )


def _database(settings: Any) -> ComponentHealth:
    started = time.perf_counter()
    try:
        result = integrity_check(settings.database)
    except Exception as exc:  # an unreachable database is a status, not a 500
        return ComponentHealth(status="down", detail=str(exc))
    latency = round((time.perf_counter() - started) * 1000, 1)
    if result != "ok":
        return ComponentHealth(status="down", detail=f"integrity check failed: {result}", latency_ms=latency)
    return ComponentHealth(status="ok", latency_ms=latency)


def _prefect(settings: Any) -> ComponentHealth:
    ready = prefect_readiness(settings.prefect.resolved_api_url(), timeout=2.0)
    if ready.ready:
        return ComponentHealth(status="ok", latency_ms=ready.latency_ms)
    return ComponentHealth(status="degraded", detail=ready.problem, latency_ms=ready.latency_ms)
