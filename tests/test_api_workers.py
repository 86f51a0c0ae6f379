"""`python -m orch.api.server` with `api.workers: 2`: one port, two worker processes, shared state.

Real processes on loopback, the real Redis for the shared rate limit. What must hold: /metrics adds up
every worker whatever worker answers the scrape, the workers append whole JSON lines to one log file,
the TLS floor applies in every worker, a rate limit held in memory is refused at start-up, and SIGTERM
stops the parent and its workers.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import free_port, require_redis, run_orch, wait_for_https, wait_until
from test_api_tls import _handshake, _self_signed

REDIS_URL = "redis://127.0.0.1:6379/3"
REQUESTS = 60


@pytest.fixture
def two_workers(isolated_env: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    require_redis(REDIS_URL, "the API workers test")
    cert, key = _self_signed(isolated_env)
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # it turns off log files
    env = {**inherited, "ORCH_HOME": str(isolated_env), "ORCH_PORT": str(port), "ORCH_API__WORKERS": "2",
           "ORCH_SECURITY__RATE_LIMIT__STORAGE_URL": REDIS_URL,
           "ORCH_API__TLS_CERT_FILE": str(cert), "ORCH_API__TLS_KEY_FILE": str(key)}
    assert run_orch("db", "init", env=env).returncode == 0
    process = subprocess.Popen([sys.executable, "-m", "orch.api.server"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    wait_for_https(port, process, timeout=60)
    # The first worker up answers the probe; wait for the second too (each writes its metric files when
    # its app is built), or the kernel could hand every request below to the first one.
    metrics_dir = isolated_env / "data" / "prometheus-multiproc" / str(port)
    wait_until(lambda: len({pid for pid in _workers_of(process.pid) if any(metrics_dir.glob(f"*_{pid}.db"))}) == 2,
               60, "both API workers to start", interval=0.1)
    yield port, isolated_env, process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def _workers_of(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return {int(pid) for pid in children.read_text().split()} if children.exists() else set()


def test_two_workers_share_metrics_logs_and_tls(two_workers: tuple[int, Path, subprocess.Popen[bytes]]) -> None:
    port, home, process = two_workers
    base = f"https://127.0.0.1:{port}"
    for _ in range(REQUESTS):  # a new connection each time: the kernel hands them to either worker
        assert httpx.get(f"{base}/healthz", verify=False).status_code == 200
    counts = []
    for _ in range(6):
        text = httpx.get(f"{base}/metrics", verify=False).text
        found = re.search(r'orch_http_requests_total\{endpoint="/healthz",method="GET",status="200"\} (\S+)', text)
        assert found, text[:500]
        counts.append(float(found[1]))
    served = REQUESTS + 1  # and the fixture's one answered probe
    assert counts == [served] * 6  # every scrape, whichever worker answered it, adds up both
    counter_files = list((home / "data" / "prometheus-multiproc" / str(port)).glob("counter_*.db"))
    assert len(counter_files) == 2

    access = [json.loads(line) for line in (home / "logs" / "orch-next.log").read_text().splitlines()
              if '"http_request"' in line]  # json.loads: a torn or interleaved line would fail here
    assert sum(1 for line in access if line["endpoint"] == "/healthz") == served

    with pytest.raises(ssl.SSLError):  # the TLS floor is set in the workers, not only in the parent
        _handshake(port, version=ssl.TLSVersion.TLSv1_1)

    workers = _workers_of(process.pid)
    process.terminate()
    assert process.wait(20) == 0

    def left() -> list[int]:
        return [pid for pid in workers if Path(f"/proc/{pid}").exists()]

    wait_until(lambda: not left(), 30, "the workers to exit with their parent", interval=0.1,
               details=lambda: f"still running: {left()}")


def test_workers_need_a_shared_rate_limit_store(isolated_env: Path) -> None:
    result = run_orch("config", "validate", env={"ORCH_HOME": str(isolated_env), "ORCH_API__WORKERS": "3"})
    assert result.returncode != 0
    assert "security.rate_limit.storage_url" in result.stderr and "3 times the limit" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
