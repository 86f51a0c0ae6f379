"""The API's own Prometheus metrics, and ``GET /metrics``.

Each app gets its own registry (tests build many apps in one process). Labels are bounded: the route
template (``/tasks/{task_id}``), never the raw path, and ``<unmatched>`` for paths no route serves.
Domain metrics (queue, system, alerts, heals) come from the monitoring collector, which reads the
database, so every API replica reports the same values for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

router = APIRouter(tags=["health"])
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("orch_http_requests_total", "HTTP requests answered.",
                                ["method", "endpoint", "status"], registry=r)
        self.duration = Histogram("orch_http_request_duration_seconds", "Time to answer an HTTP request.",
                                  ["method", "endpoint"], buckets=BUCKETS, registry=r)
        self.sse_connections = Gauge("orch_sse_connections_active", "Open SSE streams.", registry=r)
        self.sse_messages = Counter("orch_sse_messages_sent_total", "Events written to SSE streams.",
                                    registry=r)
        self.webhooks = Counter("orch_webhook_events_total", "Webhook deliveries by event and result.",
                                ["event", "result"], registry=r)
        self.rate_limited = Counter("orch_rate_limited_total", "Requests refused by the rate limit.",
                                    registry=r)
        self.total = 0  # requests served by this process, for /health?detailed=true
        self._per_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request. The labelled children are looked up once per label set (the
        set is bounded: route templates), not on every request."""
        self.total += 1
        key = (method, endpoint, status)
        children = self._per_request.get(key)
        if children is None:
            children = self._per_request[key] = (self.requests.labels(method, endpoint, str(status)),
                                                  self.duration.labels(method, endpoint))
        children[0].inc()
        children[1].observe(seconds)
        if status == 429:
            self.rate_limited.inc()


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus text format: this process's HTTP, SSE and webhook metrics plus the domain metrics."""
    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
