"""``orch config validate`` on monitoring config, and the alerts/silence/maintenance/monitor commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support import run_orch


def write_config(home: Path, text: str) -> Path:
    path = home / "orch.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_bad_targets_fail_validation_with_every_key_path(isolated_env: Path) -> None:
    bad = write_config(isolated_env, """
monitoring:
  self_healing:
    actions: [restart, reboot]
  targets:
    - name: web
      health_check: {url: "http://127.0.0.1:8080/health"}
      restart: {}
      isolate: {core: WORK_AI_01, command: "lb-drain web"}
      rollback: {deployment: web/rollback}
      actions: [restart, rollback, explode]
    - name: db
      health_check: {}
""")
    result = run_orch("config", "validate", str(bad))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].endswith(": 5 error(s)")
    assert ("  monitoring.self_healing.actions.1: must be 'restart', 'isolate' or 'rollback' "
            "(got 'reboot')") in lines
    assert ("  monitoring.targets.0.restart: needs exactly one of command, systemd_unit, windows_service, "
            "supervised (missing command)") in lines
    assert "  monitoring.targets.0.isolate: needs exactly one of core, command (got core, command)" in lines
    assert "  monitoring.targets.0.actions.2: must be 'restart', 'isolate' or 'rollback' (got 'explode')" in lines
    assert ("  monitoring.targets.1.health_check: needs exactly one of url, command, supervised "
            "(missing command)") in lines

    unconfigured = write_config(isolated_env, """
monitoring:
  targets:
    - {name: web, health_check: {command: "curl -fsS http://web/health"}, restart: {systemd_unit: web},
       actions: [rollback]}
    - {name: web, health_check: {supervised: worker}}
""")
    result = run_orch("config", "validate", str(unconfigured))
    assert result.returncode == 1
    assert "monitoring.targets.0: actions lists rollback but the target does not configure it" in result.stderr

    good = write_config(isolated_env, """
monitoring:
  targets:
    - {name: web, health_check: {command: "curl -fsS http://web/health"}, restart: {systemd_unit: web}}
""")
    assert run_orch("config", "validate", str(good)).returncode == 0


@pytest.mark.slow
def test_silences_windows_and_alerts_from_the_command_line(isolated_env: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{isolated_env}/data/orch.db"}
    assert run_orch("db", "init", env=env).returncode == 0
    added = run_orch("silence", "add", "web*", "--alert", "cpu_high", "--duration", "2h", "--reason", "deploy", env=env)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("silence 1 on web* (cpu_high) until ")
    assert run_orch("maintenance", "add", "db", "--duration", "30m", env=env).stdout.startswith("maintenance 2 on db")
    listed = run_orch("silence", "list", env=env).stdout
    assert "web*" in listed and "deploy" in listed and "db " not in listed
    assert run_orch("maintenance", "end", "2", env=env).stdout.strip() == "maintenance 2 ended"
    assert run_orch("maintenance", "list", env=env).stdout.strip() == "no maintenances"
    bad = run_orch("silence", "add", "web", "--duration", "soon", env=env)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: duration must look like 90s, 15m, 2h or 1d, got 'soon'"
    missing = run_orch("silence", "end", "99", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no silence or maintenance window with id 99"
    assert run_orch("alerts", "list", env=env).stdout.strip() == "no alerts"
    assert run_orch("alerts", "list", "--state", "loud", env=env).returncode == 1


def test_memory_monitor_reports_orch_processes(isolated_env: Path) -> None:
    result = run_orch("monitor", "mem", "--json", "--pid", str(os.getpid()), "--threshold", "0.0001")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    me, pytest_process = report["processes"]
    assert me["name"] == "orch (this command)" and me["rss_mb"] > 10 and me["high"] is True
    assert pytest_process["pid"] == os.getpid() and pytest_process["vms_mb"] >= pytest_process["rss_mb"]
    assert report["collected"] is not None and len(report["gc_stats"]) == 3


def test_monitor_targets_runs_each_health_check(isolated_env: Path) -> None:
    config = write_config(isolated_env, """
monitoring:
  orch_targets: false
  targets:
    - {name: ok, health_check: {command: "true"}, restart: {command: "true"}}
    - {name: broken, health_check: {command: ["sh", "-c", "echo refused; exit 3"]}}
""")
    lines = run_orch("monitor", "targets", "-c", str(config)).stdout.splitlines()
    assert lines[0].split()[:2] == ["ok", "healthy"] and lines[0].endswith("[heal: restart]")
    assert lines[1].split()[:2] == ["broken", "UNHEALTHY"] and "sh exited 3: refused" in lines[1]
