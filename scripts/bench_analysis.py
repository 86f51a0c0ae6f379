#!/usr/bin/env python
"""Benchmark: how long the guide's log and performance analysis take over a week of generated logs.

Generates an API log (access lines over 12 endpoints, errors, malformed lines, split over a rotated
file and a gzipped one), a worker log and an audit log; then times, in the same run, ORCH's
``performance_report`` and ``analyze_logs`` (the ``ops-report`` flow's work) against the naive
baseline: the guide's ``scripts/performance_analysis.py`` loop (``json.loads`` per line, a list per
endpoint, ``statistics.quantiles``) over the same files. Writes ``bench_results/bench_analysis.{json,md}``.

    python scripts/bench_analysis.py [--requests 300000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_common import machine_info, spread

ENDPOINTS = [("GET", "/health"), ("GET", "/healthz"), ("GET", "/metrics"), ("POST", "/dispatch"),
             ("GET", "/tasks"), ("GET", "/tasks/{task_id}"), ("PUT", "/jobs/{job_id}/status"),
             ("GET", "/jobs/{job_id}/events"), ("POST", "/webhook"), ("GET", "/locks"),
             ("POST", "/auth/login"), ("GET", "/sse/events")]
RESULTS = Path(__file__).resolve().parent.parent / "bench_results"


def generate(directory: Path, requests: int, seed: int = 7) -> dict[str, Any]:
    """A week of logs; returns their paths, sizes and line counts."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 19, tzinfo=UTC)
    step = timedelta(days=7) / requests
    lines: list[str] = []
    for i in range(requests):
        method, endpoint = ENDPOINTS[i % len(ENDPOINTS)]
        ms = round(rng.lognormvariate(3.0, 1.0), 2)
        lines.append(json.dumps({
            "timestamp": (start + step * i).isoformat(), "level": "INFO", "logger": "orch.api.access",
            "message": f"{method} {endpoint}", "event_type": "http_request", "method": method,
            "endpoint": endpoint, "path": endpoint, "status": 500 if i % 997 == 0 else 200, "duration_ms": ms,
            "client": f"10.0.{i % 7}.{i % 251}", "user": "ops"}))
        if i % 100 == 0:
            lines.append(json.dumps({"timestamp": (start + step * i).isoformat(), "level": "ERROR",
                                     "logger": "orch.api", "message": f"database is locked (pool {i % 5})"}))
        if i % 200 == 0:
            lines.append('{"truncated": ')
    third = len(lines) // 3
    api = directory / "orch-next.log"
    (directory / "orch-next.log.2.gz").write_bytes(gzip.compress("\n".join(lines[:third]).encode() + b"\n"))
    (directory / "orch-next.log.1").write_text("\n".join(lines[third:2 * third]) + "\n")
    api.write_text("\n".join(lines[2 * third:]) + "\n")
    worker = directory / "worker.log"
    worker.write_text("".join(json.dumps({
        "timestamp": (start + step * i * 4).isoformat(), "level": "INFO", "message": "task.failed",
        "event_type": "task.failed" if i % 10 == 0 else "task.completed", "task_id": f"t{i}",
        "core_id": f"WORK_AI_{i % 4:02d}", "data": {"error": f"exit {i % 3}"}}) + "\n" for i in range(requests // 4)))
    audit = directory / "audit.log"
    audit.write_text("".join(json.dumps({
        "timestamp": (start + step * i * 50).isoformat(), "username": f"user{i % 13}", "action": "authenticate",
        "success": i % 4 != 0, "ip_address": f"10.1.0.{i % 50}", "event_type": "audit"}) + "\n"
        for i in range(requests // 50)))
    api_files = [directory / "orch-next.log.2.gz", directory / "orch-next.log.1", api]
    return {"api": api, "worker": worker, "audit": audit, "api_files": api_files,
            "api_lines": len(lines), "all_lines": len(lines) + requests // 4 + requests // 50,
            "bytes": sum(p.stat().st_size for p in [*api_files, worker, audit])}


def guide_performance_analysis(files: list[Path]) -> dict[str, Any]:
    """The guide's scripts/performance_analysis.py, reading the same files (gzip included)."""
    response_times: dict[str, list[float]] = defaultdict(list)
    error_counts: dict[str, int] = defaultdict(int)
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rt") as f:
            for line in f:
                try:
                    log_entry = json.loads(line)
                    if "duration_ms" in log_entry:
                        response_times[log_entry.get("endpoint", "unknown")].append(log_entry["duration_ms"])
                    if log_entry.get("levelname") == "ERROR":
                        error_counts[log_entry.get("message", "unknown")] += 1
                except json.JSONDecodeError:
                    continue
    return {endpoint: {"avg": statistics.mean(times), "p95": statistics.quantiles(times, n=20)[18],
                       "count": len(times)} for endpoint, times in response_times.items() if len(times) > 10}


def timed(runs: int, work: Callable[[], Any]) -> tuple[list[float], Any]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    from orch.analysis.logs import analyze_logs
    from orch.analysis.performance import performance_report

    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        logs = generate(Path(tmp), args.requests)
        since = datetime(2026, 11, 19, tzinfo=UTC)
        perf_s, perf = timed(args.runs, lambda: performance_report([logs["api"]], since=since))
        analyze_s, analysis = timed(args.runs, lambda: analyze_logs([logs["api"], logs["worker"]], [logs["audit"]],
                                                                   since=since))
        guide_s, guide = timed(args.runs, lambda: guide_performance_analysis(logs["api_files"]))

    ours = {row["endpoint"].split(" ", 1)[1]: row for row in perf["endpoints"]}
    agree = all(ours[e]["requests"] == g["count"] and abs(ours[e]["avg_ms"] - g["avg"]) < 0.01
                for e, g in guide.items())
    result = {
        "machine": machine, "requests": args.requests, "runs": args.runs, "api_lines": logs["api_lines"],
        "all_lines": logs["all_lines"], "megabytes": round(logs["bytes"] / 2**20, 1),
        "orch_perf_report_s": spread(perf_s), "orch_logs_analyze_s": spread(analyze_s),
        "guide_performance_analysis_s": spread(guide_s),
        "orch_perf_lines_per_s": round(logs["api_lines"] / statistics.median(perf_s)),
        "guide_lines_per_s": round(logs["api_lines"] / statistics.median(guide_s)),
        "counts_and_averages_agree_with_guide": agree,
        "skipped_lines": perf["sources"]["skipped"], "slow_requests": analysis["slow_requests"]["total"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_analysis.json").write_text(json.dumps(result, indent=2))
    table = "\n".join([
        (f"{machine['cpu_count']} CPUs, Python {machine['python']}, {machine['timestamp']}, load average at start "
         f"{machine['load_avg_1m']}. {args.requests:,} requests over 7 days: {logs['api_lines']:,} API log lines "
         f"(3 files, one gzipped), {logs['all_lines']:,} lines in all, {result['megabytes']} MB. "
         f"Cells: median (min-max) of {args.runs} runs."), "",
        "| figure | ORCH | the guide's performance_analysis.py |", "|---|---|---|",
        (f"| per-endpoint report over the API log (s) | {_cell(result['orch_perf_report_s'])} | "
         f"{_cell(result['guide_performance_analysis_s'])} |"),
        f"| API log lines per second | {result['orch_perf_lines_per_s']:,} | {result['guide_lines_per_s']:,} |",
        f"| the four log analyses over all three logs (s) | {_cell(result['orch_logs_analyze_s'])} | - |",
        f"| request counts and averages equal | {'yes' if agree else 'NO'} | |",
    ])
    (RESULTS / "bench_analysis.md").write_text(table + "\n")
    print(table)
    return 0 if agree else 1


def _cell(values: dict[str, float]) -> str:
    return f"{values['median']} ({values['min']}-{values['max']})"


if __name__ == "__main__":
    sys.exit(main())
