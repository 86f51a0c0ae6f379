"""The guide's performance analysis (``scripts/performance_analysis.py``): response time per endpoint.

Per ``METHOD endpoint`` (the route template, so ``/tasks/{task_id}`` is one row however many tasks):
request count, average, p95, maximum and 5xx answers, from the API's ``http_request`` log lines; plus
the most frequent error messages, as the guide's report ends with them.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from orch.analysis.jsonlogs import ReadStats, read_entries, require_some
from orch.analysis.logs import (
    ERROR_LEVELS,
    duration_ms,
    is_request,
    level,
    pattern,
    top,
)


def percentile(values: list[float], percent: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, ``statistics`` "inclusive"):
    never outside the observed range, unlike the guide's "exclusive" method on small samples."""
    if len(values) == 1:
        return values[0]
    cut = statistics.quantiles(values, n=100, method="inclusive")
    return cut[int(percent) - 1]


def endpoint_key(entry: dict[str, Any]) -> str:
    method = entry.get("method")
    endpoint = str(entry.get("endpoint") or entry.get("path") or "unknown")
    return f"{method} {endpoint}" if method else endpoint


def performance_report(log_paths: Iterable[str | Path], *, since: datetime | None = None,
                       limit: int = 10) -> dict[str, Any]:
    """Endpoints slowest p95 first, overall figures and top errors; raises if no log exists."""
    stats = ReadStats()
    times: dict[str, list[float]] = defaultdict(list)
    server_errors: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for entry in read_entries(log_paths, stats, since):
        if is_request(entry):
            key = endpoint_key(entry)
            times[key].append(duration_ms(entry) or 0.0)
            status = entry.get("status")
            if isinstance(status, int) and status >= 500:
                server_errors[key] += 1
        if level(entry) in ERROR_LEVELS:
            errors[pattern(entry.get("message", "unknown"))] += 1
    require_some(stats, "log")

    rows = [{"endpoint": key, "requests": len(values), "avg_ms": round(statistics.fmean(values), 2),
             "p95_ms": round(percentile(values, 95), 2), "max_ms": round(max(values), 2),
             "errors_5xx": server_errors[key]} for key, values in times.items()]
    rows.sort(key=lambda row: (-row["p95_ms"], row["endpoint"]))
    every = [value for values in times.values() for value in values]
    return {
        "since": since.isoformat() if since else None,
        "sources": stats.as_dict(),
        "requests": len(every),
        "avg_ms": round(statistics.fmean(every), 2) if every else None,
        "p95_ms": round(percentile(every, 95), 2) if every else None,
        "endpoints": rows,
        "errors": {"total": sum(errors.values()), "top": top(errors, limit)},
    }
