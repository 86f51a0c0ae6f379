"""Tasks of the weekly ``ops-report``: analyse this host's logs and publish the results as artifacts.

Reading is retried because logrotate may move a file between listing and opening it; publishing is
retried because the Prefect API may blink. Reports travel between tasks as small dicts, never as log
lines, so a week of logs is read once per analysis and never sent to the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from orch.analysis import render
from orch.analysis.jsonlogs import LogSourceError
from orch.config.runtime import get_settings


def _worth_retrying(_task: Any, _task_run: Any, state: Any) -> bool:
    """A missing log stays missing; only a file moved mid-read (logrotate) is worth another try."""
    return not isinstance(state.result(raise_on_failure=False), LogSourceError)


READ_RETRIES = {"retries": 2, "retry_delay_seconds": 5, "retry_condition_fn": _worth_retrying}
PUBLISH_RETRIES = {"retries": 3, "retry_delay_seconds": [2, 5, 10]}
LOG_ANALYSIS_KEY = "ops-log-analysis"
PERFORMANCE_KEY = "ops-performance"
PERFORMANCE_TABLE_KEY = "ops-performance-table"


@task(name="analyze-logs", **READ_RETRIES)
def analyze_logs(since: datetime, log_paths: list[str] | None, audit_paths: list[str] | None,
                 slow_ms: float | None) -> dict[str, Any]:
    """The guide's error patterns, slow requests, authentication failures and task failures."""
    from orch.analysis.logs import analyze_logs as analyze
    from orch.analysis.sources import default_audit_paths, default_log_paths

    settings = get_settings()
    return analyze(log_paths or default_log_paths(settings), audit_paths or default_audit_paths(settings),
                   since=since,
                   slow_ms=settings.monitoring.alert_thresholds.response_time_ms if slow_ms is None else slow_ms)


@task(name="performance-report", **READ_RETRIES)
def performance_report(since: datetime, log_paths: list[str] | None) -> dict[str, Any]:
    """Average and p95 response time per endpoint with request counts."""
    from orch.analysis.performance import performance_report as report
    from orch.analysis.sources import default_log_paths

    return report(log_paths or default_log_paths(get_settings())[:1], since=since)


@task(name="publish-log-analysis", **PUBLISH_RETRIES)
def publish_log_analysis(report: dict[str, Any]) -> str:
    return str(create_markdown_artifact(
        key=LOG_ANALYSIS_KEY, markdown=render.logs_markdown(report),
        description="Errors, slow requests, authentication failures and task failures this week."))


@task(name="publish-performance", **PUBLISH_RETRIES)
def publish_performance(report: dict[str, Any]) -> list[str]:
    """A markdown artifact with the p95 chart, and the same figures as a table artifact (sortable in the UI)."""
    chart = create_markdown_artifact(key=PERFORMANCE_KEY, markdown=render.perf_markdown(report),
                                     description="p95 response time per endpoint, slowest first.")
    table = create_table_artifact(key=PERFORMANCE_TABLE_KEY, table=report["endpoints"] or [{"endpoint": "(none)"}],
                                  description="Requests, average, p95 and maximum ms per endpoint.")
    return [str(chart), str(table)]
