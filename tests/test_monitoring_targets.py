"""ORCH's own processes as targets: `orch up`'s supervisor records pids; healing stops one to restart it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_until

from orch.config.loader import load_settings
from orch.monitoring.target_actions import TargetActionFailed, run_action
from orch.monitoring.target_checks import check_health
from orch.monitoring.targets import configured_targets, find_target


def test_supervised_worker_is_checked_and_restarted_through_its_pid_file(isolated_env: Path) -> None:
    settings = load_settings(environ={"ORCH_HOME": "."}, generate_secrets=False)
    assert [t.name for t in configured_targets(settings)] == ["orch-api", "orch-worker"]
    worker = find_target(settings, "orch-worker")
    assert check_health(settings, worker).healthy is None  # not under orch up: cannot tell, no alert
    with pytest.raises(TargetActionFailed, match="worker is not running under orch up"):
        run_action(settings, worker, "restart")

    # The supervisor runs in its own process, as under `orch up` (it makes its process a subreaper and
    # stops every descendant: never this test process's, which holds the session's Prefect server).
    script = ("import sys, time; from pathlib import Path; from orch.stack.supervisor import Component, Supervisor\n"
              "sup = Supervisor(Path(sys.argv[1]))\n"
              "run = sup.start(Component('worker', [sys.executable, '-c', 'import time; time.sleep(60)'], {}, "
              "Path(sys.argv[1])))\n"
              "print(run.process.pid, flush=True); run.process.wait(); print('exited', flush=True); time.sleep(60)\n")
    host = subprocess.Popen([sys.executable, "-c", script, str(Path(settings.data_dir) / "logs")],
                            stdout=subprocess.PIPE, text=True)
    try:
        pid = int(host.stdout.readline())  # type: ignore[union-attr]
        assert check_health(settings, worker).healthy is True
        assert run_action(settings, worker, "restart") == f"stopped worker pid {pid}; orch up restarts it"
        assert host.stdout.readline().strip() == "exited"  # type: ignore[union-attr]
        wait_until(lambda: check_health(settings, worker).healthy is False, 60, "the stopped worker to check unhealthy")
        assert "exited" in check_health(settings, worker).detail
    finally:
        host.kill()
        host.wait(10)


def test_sweep_status_says_when_sweeps_stop(isolated_env: Path) -> None:
    from datetime import timedelta

    from orch.monitoring.samples import Sample, store
    from orch.monitoring.status import sweep_status
    from orch.storage.migrate import upgrade
    from orch.storage.types import utcnow

    settings = load_settings(environ={"ORCH_HOME": "."}, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    assert sweep_status(settings)["status"] == "unknown"  # never swept: just started, or never scheduled
    # Ages are read from the detail rather than compared with fixed texts: the clock runs on between
    # store and sweep_status (more so on a loaded machine), and an age only grows.
    store(settings, [Sample("cpu_percent", 5)], at=utcnow() - timedelta(seconds=3 * 60 + 31))
    stale = sweep_status(settings)
    assert stale["status"] == "degraded", stale
    assert _age(stale["detail"]) >= 211 and stale["detail"].endswith(" s ago (limit 210 s); 0 alert(s) firing")
    store(settings, [Sample("cpu_percent", 5)])
    fresh = sweep_status(settings)
    assert fresh["status"] == "ok" and fresh["detail"].endswith(" s ago (limit 210 s); 0 alert(s) firing"), fresh
    assert _age(fresh["detail"]) < 211


def _age(detail: str) -> int:
    """The seconds in "last sweep N s ago ..."."""
    match = re.match(r"last sweep (\d+) s ago ", detail)
    assert match, detail
    return int(match.group(1))
