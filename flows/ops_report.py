"""The weekly operations report: the guide's log analysis and performance analysis, as artifacts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger

from orch.analysis.logs import confine_to_log_directories
from orch.config.runtime import get_settings
from tasks.ops_report import (
    analyze_logs,
    performance_report,
    publish_log_analysis,
    publish_performance,
)


@flow(name="ops-report")
def ops_report(days: float = 7, log_paths: list[str] | None = None, audit_paths: list[str] | None = None,
               slow_ms: float | None = None) -> dict[str, Any]:
    """Analyse the last ``days`` of this host's logs (paths from the configuration unless given) and
    publish both reports, so an operator reads them under the run's Artifacts tab in the Prefect UI.

    Given paths must lie in the configured log directories: anyone allowed to start this flow (an
    operator, through the API, a task or Prefect) could otherwise have any file on the host read."""
    settings = get_settings()
    log_paths = confine_to_log_directories(settings, log_paths)
    audit_paths = confine_to_log_directories(settings, audit_paths)
    since = datetime.now(UTC) - timedelta(days=days)
    logs = analyze_logs(since, log_paths, audit_paths, slow_ms)
    performance = performance_report(since, log_paths)
    artifacts = [publish_log_analysis(logs), *publish_performance(performance)]
    summary = {
        "since": since.isoformat(), "requests": performance["requests"], "p95_ms": performance["p95_ms"],
        "errors": logs["errors"]["total"], "slow_requests": logs["slow_requests"]["total"],
        "auth_failures": logs["auth_failures"]["total"], "task_failures": logs["task_failures"]["total"],
        "artifacts": artifacts,
    }
    get_run_logger().info("ops report: %s", {k: v for k, v in summary.items() if k != "artifacts"})
    return summary
