"""Small, synchronous questions to the Prefect server that ORCH's health checks ask.

Why not Prefect's client: ``orch doctor`` and the health endpoint must answer in milliseconds and must
not import Prefect (about 2 s); ``/api/ready`` (which, unlike ``/api/health``, checks the server's
database) is one GET.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from orch.http import shared_http_client


@dataclass(frozen=True)
class Readiness:
    ready: bool
    url: str
    latency_ms: float | None
    problem: str | None = None


def prefect_readiness(api_url: str, timeout: float = 3.0) -> Readiness:
    """Ask ``GET {api_url}/ready``; a refused connection or a non-200 answer is 'not ready', with why."""
    url = api_url.rstrip("/") + "/ready"
    started = time.perf_counter()
    try:
        response = shared_http_client().get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return Readiness(False, url, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    latency = round((time.perf_counter() - started) * 1000, 1)
    if response.status_code != 200:
        return Readiness(False, url, latency, f"HTTP {response.status_code}")
    return Readiness(True, url, latency)


def online_workers(api_url: str, pool: str, timeout: float = 3.0) -> int:
    """How many workers of ``pool`` the server currently sees as ONLINE (0 when it cannot tell)."""
    url = f"{api_url.rstrip('/')}/work_pools/{pool}/workers/filter"
    try:
        response = shared_http_client().post(url, json={}, timeout=timeout)
    except httpx.HTTPError:
        return 0
    if response.status_code != 200:
        return 0
    return sum(1 for worker in response.json() if worker.get("status") == "ONLINE")
