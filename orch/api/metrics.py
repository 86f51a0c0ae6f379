"""The API's own Prometheus metrics, and ``GET /metrics``.

Each app gets its own registry (tests build many apps in one process). Labels are bounded: the route
template (``/tasks/{task_id}``), never the raw path, and ``<unmatched>`` for paths no route serves.
Domain metrics (queue, system, alerts, heals) come from the monitoring collector, which reads the
database, so every API replica reports the same values for them.

With several workers on one port (``api.workers``), a scrape reaches one of them at random, so the
server sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker starts: prometheus_client then keeps every
worker's values in files there, and ``/metrics`` adds them up (open SSE streams: the live workers').
"""

from __future__ import annotations

import os
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
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

router = APIRouter(tags=["health"])
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    domain: list[Any] = field(default_factory=list)  # collectors that read the database at scrape time

    def __post_init__(self) -> None:
        r = self.registry
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.requests = Counter("orch_http_requests_total", "HTTP requests answered.",
                                ["method", "endpoint", "status"], registry=r)
        self.duration = Histogram("orch_http_request_duration_seconds", "Time to answer an HTTP request.",
                                  ["method", "endpoint"], buckets=BUCKETS, registry=r)
        self.sse_connections = Gauge("orch_sse_connections_active", "Open SSE streams.", registry=r,
                                     multiprocess_mode="livesum")
        self.sse_messages = Counter("orch_sse_messages_sent_total", "Events written to SSE streams.",
                                    registry=r)
        self.webhooks = Counter("orch_webhook_events_total", "Webhook deliveries by event and result.",
                                ["event", "result"], registry=r)
        self.rate_limited = Counter("orch_rate_limited_total", "Requests refused by the rate limit.",
                                    registry=r)
        self.total = 0  # requests served by this process, for /health?detailed=true
        self._per_request: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def add_domain(self, collector: Any) -> None:
        self.domain.append(collector)
        if not self.multiprocess_dir:
            self.registry.register(collector)

    def exposition(self) -> bytes:
        """The Prometheus text of this process, or of every worker when there are several."""
        if not self.multiprocess_dir:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        for collector in self.domain:
            registry.register(collector)
        return bytes(generate_latest(registry))

    def process_exiting(self) -> None:
        """Drop this worker's live gauges (its open SSE streams) from the workers' sum."""
        if self.multiprocess_dir:
            mark_process_dead(os.getpid(), self.multiprocess_dir)

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
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
