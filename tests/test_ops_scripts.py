"""The guide's operator scripts at the guide's paths, run as the guide runs them (from another directory,
as cron does): health_check.py, analyze_logs.sh and performance_analysis.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _run(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), cwd=cwd, check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_health_check_reports_the_database_like_the_guide(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url}
    missing = _run(sys.executable, str(SCRIPTS / "health_check.py"), cwd=tmp_path, env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: Database unhealthy - ") and "orch db init" in missing.stderr

    from orch.config.schema import DatabaseSettings
    from orch.storage.migrate import upgrade

    upgrade(DatabaseSettings(url=database_url), create_database=True)
    healthy = _run(sys.executable, str(SCRIPTS / "health_check.py"), cwd=tmp_path, env=env)
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.strip() == "Database healthy - 0 tasks in last hour"


def test_analysis_scripts_read_the_installations_logs(isolated_env: Path, tmp_path: Path) -> None:
    logs = isolated_env / "logs"
    logs.mkdir()
    lines = [{"timestamp": "2026-11-26T10:00:00+00:00", "level": "INFO", "event_type": "http_request",
              "method": "GET", "endpoint": "/health", "status": 200, "duration_ms": float(ms)} for ms in (1, 2, 3000)]
    (logs / "orch-next.log").write_text("".join(json.dumps(line) + "\n" for line in lines) + "{broken\n")

    analysed = _run(str(SCRIPTS / "analyze_logs.sh"), "--json", cwd=tmp_path)
    assert analysed.returncode == 0, analysed.stderr
    report = json.loads(analysed.stdout)
    assert report["slow_requests"]["total"] == 1 and report["sources"]["logs"]["skipped"] == 1

    perf = _run(sys.executable, str(SCRIPTS / "performance_analysis.py"), "--json", cwd=tmp_path)
    assert perf.returncode == 0, perf.stderr
    rows = json.loads(perf.stdout)["endpoints"]
    assert rows == [{"endpoint": "GET /health", "requests": 3, "avg_ms": 1001.0, "p95_ms": 2700.2,
                     "max_ms": 3000.0, "errors_5xx": 0}]

    nothing = _run(str(SCRIPTS / "analyze_logs.sh"), "--log", str(tmp_path / "none.log"), cwd=tmp_path)
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: no log found")
