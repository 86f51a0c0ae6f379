"""The guide's error-pattern analysis (``scripts/analyze_logs.sh``) over ORCH's JSON logs.

Four questions, as the guide asks them: which errors happen most, which requests were slow (over
``monitoring.alert_thresholds.response_time_ms``, 2 s by default), who failed to authenticate (from the
audit log), and how tasks fail. Counting is done in one pass per log, so a week of logs is read once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orch.analysis.jsonlogs import ReadStats, confine, entry_time, read_entries, require_some
from orch.config.schema import Settings

ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
TASK_FAILURES = frozenset({"task.failed", "task.timed_out"})
EARLIEST = datetime.min.replace(tzinfo=UTC)  # undated entries sort first
KEY_LENGTH = 200  # long messages are grouped by their first 200 characters of the first line


def log_directories(settings: Settings) -> list[Path]:
    """The directories this installation logs to (``logging.file``, ``logging.audit_file`` and the
    worker's log under ``data_dir``): the only places a flow started by anyone may read logs from."""
    from orch.analysis.sources import default_audit_paths, default_log_paths

    directories: list[Path] = []
    for path in [*default_log_paths(settings), *default_audit_paths(settings)]:
        if path.parent not in directories:
            directories.append(path.parent)
    return directories


def confine_to_log_directories(settings: Settings, paths: list[str] | None) -> list[str] | None:
    """``paths`` given as a flow parameter, resolved and checked to lie in :func:`log_directories`
    (:class:`~orch.analysis.jsonlogs.LogPathRefused` otherwise); None or empty stays as is (the defaults,
    which are inside by definition). The flow then reads exactly the resolved paths it checked."""
    if not paths:
        return paths
    return [str(path) for path in confine(paths, log_directories(settings))]


def level(entry: dict[str, Any]) -> str:
    """ORCH's formatter writes ``level``; the guide's formatter (and other tools) write ``levelname``."""
    return str(entry.get("level") or entry.get("levelname") or "").upper()


def pattern(text: Any) -> str:
    lines = str(text).strip().splitlines()
    return lines[0][:KEY_LENGTH] if lines else ""


def duration_ms(entry: dict[str, Any]) -> float | None:
    value = entry.get("duration_ms")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def is_request(entry: dict[str, Any]) -> bool:
    """An API access line: ORCH's ``event_type: http_request``, or the guide's bare ``endpoint`` +
    ``duration_ms`` line; either way it needs a numeric duration to count."""
    kind = entry.get("event_type")
    return (kind == "http_request" or (kind is None and "endpoint" in entry)) and duration_ms(entry) is not None


def is_auth_failure(entry: dict[str, Any]) -> bool:
    """The guide's ``event_type: auth_failure``, or an audit event ``authenticate`` with ``success`` false."""
    if entry.get("event_type") == "auth_failure":
        return True
    success = entry.get("success")
    failed = success is False or (isinstance(success, str) and success.lower() == "false")
    return entry.get("action") == "authenticate" and failed


def top(counter: Counter[str], limit: int) -> list[dict[str, Any]]:
    """Most frequent first; ties in alphabetical order, so a report is the same on every run."""
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return [{"pattern": key, "count": count} for key, count in ranked[:limit]]


def analyze_logs(log_paths: Iterable[str | Path], audit_paths: Iterable[str | Path], *,
                 since: datetime | None = None, slow_ms: float = 2000, limit: int = 10) -> dict[str, Any]:
    """The four analyses as one JSON-able report; raises :class:`LogSourceError` if no log exists."""
    log_stats, audit_stats = ReadStats(), ReadStats()
    errors: Counter[str] = Counter()
    task_failures: Counter[str] = Counter()
    failures_by_core: Counter[str] = Counter()
    slow: list[dict[str, Any]] = []
    for entry in read_entries(log_paths, log_stats, since):
        if level(entry) in ERROR_LEVELS:
            errors[pattern(entry.get("message", "unknown"))] += 1
        if is_request(entry) and (duration_ms(entry) or 0) > slow_ms:
            slow.append({"timestamp": entry.get("timestamp") or entry.get("asctime"),
                         "method": entry.get("method"), "endpoint": entry.get("endpoint"),
                         "status": entry.get("status"), "duration_ms": duration_ms(entry)})
        if entry.get("event_type") in TASK_FAILURES:
            data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
            default = "timed out" if entry["event_type"] == "task.timed_out" else "unknown"
            task_failures[pattern(data.get("error") or default)] += 1
            failures_by_core[str(entry.get("core_id") or data.get("core_id") or "unknown")] += 1
    require_some(log_stats, "log")

    auth: list[dict[str, Any]] = []
    for entry in read_entries(audit_paths, audit_stats, since):
        if is_auth_failure(entry):
            auth.append({"timestamp": entry.get("timestamp"),
                         "username": entry.get("username") or entry.get("user_id"),
                         "ip_address": entry.get("ip_address")})
    auth.sort(key=lambda row: entry_time(row) or EARLIEST)

    slow.sort(key=lambda row: -(row["duration_ms"] or 0))
    return {
        "since": since.isoformat() if since else None,
        "sources": {"logs": log_stats.as_dict(), "audit": audit_stats.as_dict()},
        "errors": {"total": sum(errors.values()), "top": top(errors, limit)},
        "slow_requests": {"threshold_ms": slow_ms, "total": len(slow), "slowest": slow[:limit]},
        "auth_failures": {
            "total": len(auth), "latest": auth[-2 * limit:],
            "by_username": top(Counter(str(row["username"]) for row in auth), limit),
            "by_ip_address": top(Counter(str(row["ip_address"]) for row in auth), limit)},
        "task_failures": {"total": sum(task_failures.values()), "patterns": top(task_failures, limit),
                          "by_core": top(failures_by_core, limit)},
    }
