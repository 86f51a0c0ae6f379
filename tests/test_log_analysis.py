"""Log and performance analysis on generated logs whose answers are known, malformed lines included."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import run_orch

from orch.analysis.jsonlogs import (
    LogSourceError,
    ReadStats,
    log_files,
    parse_since,
    read_entries,
)
from orch.analysis.logs import analyze_logs
from orch.analysis.performance import performance_report
from orch.analysis.render import logs_markdown, p95_chart_svg, perf_markdown, perf_text

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
RECENT = (NOW - timedelta(hours=1)).isoformat()
OLD = (NOW - timedelta(days=30)).isoformat()
MALFORMED = ["plain text from Prefect's console handler", '{"truncated": ', "[1, 2]", '"just a string"']


def request(endpoint: str, ms: float, *, method: str = "GET", status: int = 200, at: str = RECENT) -> dict[str, Any]:
    return {"timestamp": at, "level": "INFO", "logger": "orch.api.access", "message": f"{method} {endpoint}",
            "event_type": "http_request", "method": method, "endpoint": endpoint, "path": endpoint,
            "status": status, "duration_ms": ms, "client": "127.0.0.1", "user": "ops"}


def write(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    """A week of an installation's logs, split over rotated files, with known answers.

    - ``GET /tasks/{task_id}``: 1..100 ms (two of them 503): avg 50.5, p95 95.05, max 100.
    - ``POST /dispatch``: eight of 100 ms, 2500 and 3000 ms: avg 630, p95 2775; the two are the slow ones.
    - ``GET /health``: exactly 2000 ms: not slow (the guide's test is "> 2 s").
    - errors: "database is locked" x3 (one with the guide's ``levelname``), "disk full" x1 (CRITICAL).
    - tasks: "boom" x2 on WORK_AI_01, one timeout on WORK_AI_02; audit: alice x2, bob x1, eve x1 failures.
    - 30-day-old and undated lines that a 7-day window leaves out; garbage a reader must survive.
    """
    api = tmp_path / "logs" / "orch-next.log"
    tasks = [request("/tasks/{task_id}", float(ms), status=503 if ms in (10, 20) else 200) for ms in range(1, 101)]
    write(api.with_name("orch-next.log.2.gz"), tasks[:40] + [MALFORMED[0]])
    write(api.with_name("orch-next.log.1"), tasks[40:] + [MALFORMED[1]])
    write(api, [
        *(request("/dispatch", ms, method="POST") for ms in [100.0] * 8 + [2500.0, 3000.0]),
        request("/health", 2000.0),
        {**request("/tasks", 9000.0), "duration_ms": "slow"},  # not a number: not a request
        request("/tasks", 9000.0, at=OLD),  # outside a 7-day window
        {"level": "INFO", "message": "undated", "event_type": "http_request", "endpoint": "/x", "duration_ms": 1},
        {"timestamp": RECENT, "level": "ERROR", "message": "database is locked"},
        {"timestamp": RECENT, "level": "ERROR", "message": "database is locked\nTraceback (most recent call last):"},
        {"timestamp": RECENT, "levelname": "ERROR", "message": "database is locked"},
        {"timestamp": RECENT, "level": "CRITICAL", "message": "disk full"},
        {"timestamp": RECENT, "level": "WARNING", "message": "slow query"},
        {"timestamp": OLD, "level": "ERROR", "message": "old error"},
        *MALFORMED[2:],
        {"timestamp": RECENT, "level": "INFO", "message": "task.created", "event_type": "task.created",
         "task_id": "t0", "core_id": "WORK_AI_01", "data": {}},
    ])
    worker = write(tmp_path / "data" / "logs" / "worker.log", [
        "12:00:00.000 | INFO    | prefect.flow_runs - Beginning flow run 'dispatch'",
        *({"timestamp": RECENT, "level": "INFO", "message": "task.failed", "event_type": "task.failed",
           "task_id": f"t{i}", "core_id": "WORK_AI_01", "data": {"attempts": 1, "error": "boom"}} for i in (1, 2)),
        {"timestamp": RECENT, "level": "INFO", "message": "task.timed_out", "event_type": "task.timed_out",
         "task_id": "t3", "core_id": "WORK_AI_02", "data": {"attempts": 3}},
        {"timestamp": RECENT, "level": "INFO", "message": "task.completed", "event_type": "task.completed",
         "task_id": "t4", "core_id": "WORK_AI_02", "data": {"duration": 0.1}},
    ])

    def auth(user: str, ip: str, success: bool, minutes: int) -> dict[str, Any]:
        return {"timestamp": (NOW - timedelta(minutes=minutes)).isoformat(), "user_id": user, "username": user,
                "action": "authenticate", "resource": "session", "resource_id": None, "ip_address": ip,
                "user_agent": "curl/8", "success": success, "details": {}, "event_type": "audit"}

    audit = write(tmp_path / "logs" / "audit.log", [
        auth("alice", "10.0.0.1", False, 50), auth("bob", "10.0.0.2", False, 40),
        auth("alice", "10.0.0.1", False, 30), auth("carol", "10.0.0.3", True, 20),
        {"timestamp": (NOW - timedelta(minutes=10)).isoformat(), "event_type": "auth_failure", "username": "eve",
         "ip_address": "10.0.0.4"},  # the guide's own shape
        {**auth("mallory", "10.0.0.5", False, 0), "timestamp": OLD},
        MALFORMED[1],
    ])
    return {"api": api, "worker": worker, "audit": audit}


def test_rotated_files_are_read_oldest_first(logs: dict[str, Path]) -> None:
    assert [p.name for p in log_files(logs["api"])] == ["orch-next.log.2.gz", "orch-next.log.1", "orch-next.log"]
    stats = ReadStats()
    durations = [entry["duration_ms"] for entry in read_entries([logs["api"]], stats)
                 if entry.get("endpoint") == "/tasks/{task_id}"]
    assert durations == [float(ms) for ms in range(1, 101)]
    assert stats.skipped == 4 and len(stats.files) == 3


def test_log_analysis_known_answers(logs: dict[str, Path]) -> None:
    report = analyze_logs([logs["api"], logs["worker"]], [logs["audit"]], since=NOW - timedelta(days=7))

    assert report["errors"] == {"total": 4, "top": [{"pattern": "database is locked", "count": 3},
                                                    {"pattern": "disk full", "count": 1}]}
    slow = report["slow_requests"]
    assert slow["threshold_ms"] == 2000 and slow["total"] == 2
    assert [(r["method"], r["endpoint"], r["duration_ms"]) for r in slow["slowest"]] == [
        ("POST", "/dispatch", 3000.0), ("POST", "/dispatch", 2500.0)]
    auth = report["auth_failures"]
    assert auth["total"] == 4
    assert [r["username"] for r in auth["latest"]] == ["alice", "bob", "alice", "eve"]
    assert auth["by_username"] == [{"pattern": "alice", "count": 2}, {"pattern": "bob", "count": 1},
                                   {"pattern": "eve", "count": 1}]
    assert auth["by_ip_address"][0] == {"pattern": "10.0.0.1", "count": 2}
    tasks = report["task_failures"]
    assert tasks["patterns"] == [{"pattern": "boom", "count": 2}, {"pattern": "timed out", "count": 1}]
    assert tasks["by_core"] == [{"pattern": "WORK_AI_01", "count": 2}, {"pattern": "WORK_AI_02", "count": 1}]

    logs_read = report["sources"]["logs"]
    assert logs_read["skipped"] == 5  # four malformed lines in the API log, Prefect's text line in the worker's
    assert logs_read["undated"] == 1 and logs_read["before_window"] == 2 and logs_read["missing"] == []
    assert report["sources"]["audit"]["skipped"] == 1


def test_whole_files_without_a_window_count_the_old_lines_too(logs: dict[str, Path]) -> None:
    report = analyze_logs([logs["api"], logs["worker"]], [logs["audit"]], slow_ms=5000)
    assert report["errors"]["total"] == 5  # "old error" is in again
    assert [r["duration_ms"] for r in report["slow_requests"]["slowest"]] == [9000.0]  # the old /tasks request
    assert report["auth_failures"]["total"] == 5


def test_performance_known_answers(logs: dict[str, Path]) -> None:
    report = performance_report([logs["api"]], since=NOW - timedelta(days=7))

    rows = {row["endpoint"]: row for row in report["endpoints"]}
    assert rows["GET /tasks/{task_id}"] == {"endpoint": "GET /tasks/{task_id}", "requests": 100, "avg_ms": 50.5,
                                            "p95_ms": 95.05, "max_ms": 100.0, "errors_5xx": 2}
    assert rows["POST /dispatch"] == {"endpoint": "POST /dispatch", "requests": 10, "avg_ms": 630.0,
                                      "p95_ms": 2775.0, "max_ms": 3000.0, "errors_5xx": 0}
    assert [row["endpoint"] for row in report["endpoints"]] == ["POST /dispatch", "GET /health",
                                                                "GET /tasks/{task_id}"]  # slowest p95 first
    assert report["requests"] == 111
    assert report["errors"]["top"][0] == {"pattern": "database is locked", "count": 3}


def test_renderings_carry_the_figures_and_a_valid_chart(logs: dict[str, Path]) -> None:
    from xml.etree import ElementTree

    report = performance_report([logs["api"]], since=NOW - timedelta(days=7))
    text = perf_text(report)
    assert "GET /tasks/{task_id}" in text and "95.05" in text and "2,775.00" in text and "█" in text
    markdown = perf_markdown(report)
    assert "![p95 response time per endpoint](data:image/svg+xml;base64," in markdown
    assert "| POST /dispatch | 10 | 630.00 | 2,775.00 | 3,000.00 | 0 |" in markdown
    svg = ElementTree.fromstring(p95_chart_svg(report["endpoints"]))
    labels = [node.text for node in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "GET /tasks/{task_id}" in labels and "2,775.0" in labels

    log_md = logs_markdown(analyze_logs([logs["api"], logs["worker"]], [logs["audit"]],
                                        since=NOW - timedelta(days=7)))
    assert "## Slow requests over 2000 ms (2)" in log_md and "| 2 | boom |" in log_md
    assert "| 2 | alice |" in log_md


def test_no_log_at_all_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    with pytest.raises(LogSourceError, match="no log found at .*missing.log"):
        performance_report([tmp_path / "missing.log"])


def test_since_parsing() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_since("2026-11-01T00:00:00", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(LogSourceError, match="expected 30m"):
        parse_since("last week", NOW)


def test_cli_reads_the_configured_logs(logs: dict[str, Path], tmp_path: Path) -> None:
    env = {"ORCH_HOME": str(tmp_path)}  # logs/orch-next.log, logs/audit.log, data/logs/worker.log under it
    analysed = run_orch("logs", "analyze", "--json", env=env)
    assert analysed.returncode == 0, analysed.stderr
    report = json.loads(analysed.stdout)
    assert report["task_failures"]["total"] == 3 and report["auth_failures"]["total"] == 5
    assert report["slow_requests"]["total"] == 3  # whole files: the 30-day-old 9 s request too

    perf = run_orch("perf", "report", "--since", "2026-11-19T12:00:00+00:00", env=env)
    assert perf.returncode == 0, perf.stderr
    assert "Performance Analysis Report" in perf.stdout and "95.05" in perf.stdout

    piped = run_orch("perf", "report", "--json", "--log", "-", input=logs["api"].read_text(), env=env)
    assert json.loads(piped.stdout)["requests"] == 13  # the current file only, old and undated lines too

    missing = run_orch("logs", "analyze", "--log", str(tmp_path / "nope.log"), env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: no log found at ") and "Traceback" not in missing.stderr


def test_analysis_reads_what_the_running_api_writes(isolated_env: Path) -> None:
    """The contract end to end: the real API's access lines and audit trail feed both analyses."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    from support import answers_200, free_port, wait_until

    port = free_port()
    env = {**os.environ, "ORCH_PORT": str(port), "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    env.pop("PYTEST_CURRENT_TEST", None)  # under pytest ORCH writes no log files; this API must, as in production
    assert run_orch("db", "init", env=env).returncode == 0
    api = subprocess.Popen([sys.executable, "-m", "orch.api.server"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers_200(f"{base}/healthz", api), 60, "the API to start")
        for _ in range(3):
            httpx.get(f"{base}/no-such-page", timeout=5)
        refused = httpx.post(f"{base}/auth/token", data={"username": "mallory", "password": "Wrong-password-1!"},
                             timeout=10)
        assert refused.status_code == 401
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(30)

    reported = run_orch("perf", "report", "--json")
    assert reported.returncode == 0, reported.stderr
    perf = json.loads(reported.stdout)
    counts = {row["endpoint"]: row["requests"] for row in perf["endpoints"]}
    assert counts["GET /healthz"] >= 1 and counts["POST /auth/token"] == 1
    assert counts["GET <unmatched>"] == 3  # unknown paths are one row, not one per path
    analysis = json.loads(run_orch("logs", "analyze", "--json").stdout)
    assert analysis["auth_failures"]["total"] == 1
    assert analysis["auth_failures"]["latest"][0]["username"] == "mallory"
    assert analysis["auth_failures"]["latest"][0]["ip_address"] == "127.0.0.1"
