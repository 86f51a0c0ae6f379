"""The FastAPI application factory. One router module per resource; this file only assembles them.

Middleware, outermost first: security headers, trusted proxies, trusted hosts, access log and metrics,
CORS, maintenance mode, the request guard (NUL characters, body size, JSON depth), GZip. The console
(``/ui/``) and the offline ``/docs`` and ``/redoc`` are added by :mod:`orch.api.console`. Security headers
come first so that every answer, a refusal included, carries them. The proxies' ``X-Forwarded-For`` is
applied here, from ``api.forwarded_allow_ips`` only (uvicorn's own is off, see
:func:`orch.api.server.uvicorn_options`), so the in-process test client and uvicorn see the same address.
Host checking comes next so nothing else runs for a forged Host header; CORS sits outside maintenance
mode so a browser's preflight still gets its answer during maintenance.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from orch import __version__
from orch.config.schema import Settings

GZIP_MINIMUM_BYTES = 1024
CORS_MAX_AGE_SECONDS = 600


def docs_enabled(settings: Settings) -> bool:
    """``features.docs``; unset means on locally and off in production, as the guide runs it."""
    return settings.features.docs if settings.features.docs is not None else settings.environment == "local"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: this process's settings)."""
    if settings is None:
        from orch.config.runtime import get_settings

        settings = get_settings()
    from orch.api.console.docs import install_docs
    from orch.api.console.routes import install as install_console
    from orch.api.deliveries import DeliveryLog
    from orch.api.deps import IdentityCache
    from orch.api.dispatch_group import DispatchGroup
    from orch.api.errors import install_error_handlers
    from orch.api.events import EventHub, StreamSlots
    from orch.api.metrics import ApiMetrics
    from orch.api.metrics import router as metrics_router
    from orch.api.middleware import (
        AccessLogMiddleware,
        MaintenanceMiddleware,
        RequestGuardMiddleware,
        SecurityHeadersMiddleware,
    )
    from orch.api.routes import (
        auth,
        cores,
        deployments,
        health,
        locks,
        maintenance_mode,
        mcp,
        monitoring,
        operations,
        sse,
        tasks,
        users,
        webhook,
    )
    from orch.audit import configure_audit_log
    from orch.monitoring.collector import DomainCollector
    from orch.security.ratelimit import RateLimiter
    from orch.storage.engine import refusing_writes_when_corrupt

    configure_audit_log(settings.logging.audit_file)
    hub = EventHub(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        try:
            with refusing_writes_when_corrupt():  # no work accepted into a damaged file (orch.storage.engine)
                yield
        finally:
            await hub.stop()
            app.state.metrics.process_exiting()

    docs = docs_enabled(settings)
    app = FastAPI(title="ORCH-Next", version=__version__, lifespan=lifespan,
                  description="Task dispatch, operations and health for ORCH-Next. Authenticate with "
                              "POST /auth/token and send `Authorization: Bearer <token>`.",
                  docs_url=None, redoc_url=None,  # served from local files (orch.api.console.docs)
                  openapi_url="/openapi.json" if docs else None,
                  # ORCH's metrics are Prometheus (/metrics); FastAPI's own OpenTelemetry hooks, never
                  # configured here, looked up three providers on every request.
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.started = time.monotonic()
    app.state.metrics = ApiMetrics()
    app.state.rate_limiter = RateLimiter(settings.security.rate_limit)
    app.state.identity_cache = IdentityCache(settings.security.identity_cache_seconds)
    app.state.event_hub = hub
    app.state.anonymous_streams = StreamSlots(settings.api.max_anonymous_streams)
    app.state.user_streams = StreamSlots(settings.api.max_streams_per_user)
    app.state.health_cache = health._Cache(settings.api.health_cache_seconds)
    app.state.deliveries = DeliveryLog(settings.database, settings.security.webhook_tolerance_seconds)
    app.state.dispatch_group = DispatchGroup(settings)
    app.state.metrics.add_domain(DomainCollector(settings))  # queue, system, alert and healing metrics

    install_error_handlers(app)
    # Routers are matched in the order included, each route tried in turn: the busiest paths come
    # first (a webhook, 5th before, spent 9 % of its CPU finding its route).
    for module in (health, webhook, tasks, cores, sse, auth, locks, deployments, users, mcp, monitoring,
                   operations, maintenance_mode):
        app.include_router(module.router)
    app.include_router(metrics_router)
    install_console(app)
    if docs:
        install_docs(app, "/openapi.json")

    # add_middleware wraps: the last added is the outermost.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES)
    app.add_middleware(RequestGuardMiddleware, limit=settings.api.max_body_bytes,
                       max_json_depth=settings.api.max_json_depth)
    app.add_middleware(MaintenanceMiddleware, settings=settings)
    app.add_middleware(CORSMiddleware, allow_origins=settings.api.cors_origins, allow_credentials=True,
                       allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type", "X-Signature", "Last-Event-ID"],
                       max_age=CORS_MAX_AGE_SECONDS)
    app.add_middleware(AccessLogMiddleware, metrics=app.state.metrics)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.api.trusted_hosts)
    if settings.api.forwarded_allow_ips:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.api.forwarded_allow_ips)
    app.add_middleware(SecurityHeadersMiddleware)
    return app
