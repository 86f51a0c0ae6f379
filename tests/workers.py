"""ORCH's long-running processes as the slow tests start them: the worker process, the standalone dispatcher,
the API server, or any command (:func:`running`). Each writes its output to a log file the test can read, and is
stopped on the way out however the test ended (SIGTERM, then SIGKILL after a grace), so no test leaves a
process behind to take work from the next one.

Also the monitoring configuration these worker tests share (:data:`QUIET_THRESHOLDS`, :func:`unreachable_target`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from support import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Thresholds no host's load reaches: the test's sweeps alert only on what the test does. Zombie runs: other
# tests' runs killed on the session's shared Prefect server must not count.
QUIET_THRESHOLDS: dict[str, float] = {"cpu_percent": 100, "memory_percent": 100, "disk_usage_percent": 100,
                                      "response_time_ms": 1e9, "error_rate_percent": 100,
                                      "prefect_zombie_runs": 1_000_000}


def unreachable_target(name: str, **fields: Any) -> dict[str, Any]:
    """A target whose health check never passes (nothing listens on its port) and whose restart does nothing."""
    return {"name": name, "health_check": {"url": f"http://127.0.0.1:{free_port()}/", "timeout": 1},
            "restart": {"command": ["/bin/true"]}, **fields}


@contextmanager
def running(argv: list[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
            grace: float = 30.0, new_session: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as a child process with this process's environment plus ``env``, its output appended to
    ``log``; on the way out SIGTERM, and SIGKILL if it has not exited within ``grace`` seconds. A test may
    stop it itself first (to assert how it stops): then there is nothing left to do."""
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=new_session)
    try:
        yield child
    finally:
        stop_child(child, grace)


def stop_child(child: subprocess.Popen[bytes], grace: float) -> int | None:
    """SIGTERM ``child`` unless it has exited, SIGKILL it after ``grace`` seconds; its exit code."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
    return child.returncode


def inprocess_worker(pool: str, name: str, log: Path, *args: str, env: Mapping[str, str] | None = None,
                     **options: Any) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``python -m orch.stack.worker`` serving only the scratch in-process pool ``pool`` (no process pool),
    as worker ``name``, from the checkout (its flows run in-process only from there); ``args`` are further
    worker options (``--no-dispatcher``, ``--sweep``...). A context manager, as :func:`running`."""
    return running([sys.executable, "-m", "orch.stack.worker", "--no-process", "--inprocess-pool", pool,
                    "--name", name, *args], log, env=env, cwd=PROJECT_ROOT, **options)


def dispatcher_service(log: Path, env: Mapping[str, str] | None = None,
                       **options: Any) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``python -m orch.dispatch.service``, the standalone dispatcher. A context manager, as :func:`running`."""
    return running([sys.executable, "-m", "orch.dispatch.service"], log, env=env, **options)


def api_server(log: Path, env: Mapping[str, str] | None = None,
               **options: Any) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``python -m orch.api.server``. A context manager, as :func:`running`."""
    return running([sys.executable, "-m", "orch.api.server"], log, env=env, **options)
