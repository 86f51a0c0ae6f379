"""ORCH's own processes as targets: `orch up`'s supervisor records pids; healing stops one to restart it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from orch.config.loader import load_settings
from orch.monitoring.targets import (
    ActionFailed,
    check_health,
    configured_targets,
    find_target,
    run_action,
)


def test_supervised_worker_is_checked_and_restarted_through_its_pid_file(isolated_env: Path) -> None:
    settings = load_settings(environ={"ORCH_HOME": "."}, generate_secrets=False)
    assert [t.name for t in configured_targets(settings)] == ["orch-api", "orch-worker"]
    worker = find_target(settings, "orch-worker")
    assert check_health(settings, worker).healthy is None  # not under orch up: cannot tell, no alert
    with pytest.raises(ActionFailed, match="worker is not running under orch up"):
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
        deadline = time.monotonic() + 10
        while check_health(settings, worker).healthy is not False:
            assert time.monotonic() < deadline
            time.sleep(0.1)
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
    store(settings, [Sample("cpu_percent", 5)], at=utcnow() - timedelta(seconds=3 * 60 + 31))
    stale = sweep_status(settings)
    assert stale["status"] == "degraded" and stale["detail"].startswith("last sweep 21")
    store(settings, [Sample("cpu_percent", 5)])
    assert sweep_status(settings) == {"status": "ok", "detail": "last sweep 0 s ago (limit 210 s); 0 alert(s) firing"}
