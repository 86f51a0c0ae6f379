"""The backup deployments as an operator meets them: ``prefect deploy`` of this repository's
``prefect.yaml``, a real process worker, ``prefect deployment run``, and the catalog entry it leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from support import BIN, run_orch

from deployments.apply import PREFECT_FILE, PROJECT_ROOT, ensure_work_pools


def test_guide_schedules_are_prefect_yaml_schedules() -> None:
    spec = {(d["entrypoint"], d["name"]): d for d in yaml.safe_load(PREFECT_FILE.read_text())["deployments"]}
    daily = spec[("flows/backup.py:backup", "daily")]
    full = spec[("flows/backup.py:backup", "weekly-full")]
    assert [s["cron"] for s in daily["schedules"]] == ["0 2 * * *"] and daily["parameters"] == {"kind": "daily"}
    assert [s["cron"] for s in full["schedules"]] == ["0 3 * * 0"] and full["parameters"] == {"kind": "full"}
    assert [s["cron"] for s in spec[("flows/db_maintenance.py:db_maintenance", "weekly")]["schedules"]] \
        == ["0 4 * * 0"]
    for key in [("flows/restore.py:restore", "manual"), ("flows/recovery.py:service_recovery", "manual"),
                ("flows/recovery.py:emergency_recovery", "manual")]:
        assert spec[key]["work_pool"]["name"] == "orch-process" and "schedules" not in spec[key]


@pytest.mark.slow
def test_prefect_deployment_run_of_backup_completes_with_its_catalog_entry(
        prefect_server: str, isolated_env: Path) -> None:
    env = {**os.environ, "ORCH_HOME": str(isolated_env), "PREFECT_API_URL": prefect_server,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "1"}
    assert run_orch("db", "init", env=env).returncode == 0
    assert run_orch("dispatch", "--core", "WORK_AI_01", "--action", "noop", env=env).returncode == 0
    ensure_work_pools(["orch-process"])
    deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "backup/daily"],
                              cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "orch-process", "--type",
                               "process", "--limit", "1"], cwd=isolated_env, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = subprocess.run([str(BIN / "prefect"), "deployment", "run", "backup/daily", "--watch",
                              "--watch-timeout", "240"], env=env, capture_output=True, text=True, timeout=300)
    finally:  # Prefect's own worker; on a loaded machine its SIGTERM shutdown (log flush) can outlast any bound
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Completed" in run.stdout
    catalog = json.loads((isolated_env / "data" / "backups" / "catalog.json").read_text())
    [entry] = catalog["backups"]
    assert entry["kind"] == "daily" and entry["verified"] and entry["row_counts"]["tasks"] == 1
    assert (isolated_env / "data" / "backups" / entry["file"]).is_file()
    listed = run_orch("backup", "list", env=env)
    assert entry["file"] in listed.stdout and " daily " in listed.stdout
