"""A target's health check, run once: an HTTP status, a command's exit code, or a pid `orch up` recorded."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache

import httpx

from orch.config.schema import Settings, TargetSettings
from orch.http import http_client
from orch.monitoring.pid_files import supervised_pid


@dataclass(frozen=True)
class Health:
    healthy: bool | None  # None: cannot tell here (e.g. not running under `orch up`)
    detail: str
    latency_ms: float | None = None


@lru_cache(maxsize=1)
def probe_client() -> httpx.Client:
    """One HTTP client per process for the sweep's probes: building one costs ~20 ms of CPU (its TLS
    context), and a sweep probes the API, Prefect and every target. Timeouts are given per request."""
    return http_client(5.0)


def check_health(settings: Settings, target: TargetSettings) -> Health:
    """Run the target's health check once; never raises."""
    check = target.health_check
    started = time.perf_counter()
    if check.url:
        try:
            status = probe_client().get(check.url, timeout=check.timeout).status_code
        except httpx.HTTPError as exc:
            return Health(False, f"GET {check.url}: {type(exc).__name__}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        if status != check.expected_status:
            return Health(False, f"GET {check.url}: HTTP {status}, expected {check.expected_status}", latency)
        return Health(True, f"GET {check.url}: HTTP {status}", latency)
    if check.command:
        try:
            result = subprocess.run(check.command, capture_output=True, text=True, check=False,
                                    timeout=check.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Health(False, f"{check.command[0]}: {type(exc).__name__}: {exc}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        output = (result.stdout + result.stderr).strip().splitlines()
        detail = f"{check.command[0]} exited {result.returncode}" + (f": {output[-1][:200]}" if output else "")
        return Health(result.returncode == 0, detail, latency)
    pid = supervised_pid(settings, check.supervised or "")
    if pid is None:
        return Health(None, f"{check.supervised} is not running under orch up")
    return Health(pid > 0, f"{check.supervised} pid {abs(pid)} " + ("alive" if pid > 0 else "exited"))
