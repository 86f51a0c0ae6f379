"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_orch(*args: str, input: str | None = None, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed ``orch`` console script, as a user runs it."""
    return subprocess.run([str(BIN / "orch"), *args], input=input, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def require_redis(url: str, purpose: str) -> None:
    """Fail (never skip) when the Redis a test needs is not answering: CI must not pass without it."""
    import pytest
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Redis at {url} is required for {purpose}: {exc}")


def wait_for_https(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until ``GET https://127.0.0.1:<port>/healthz`` answers 200; fails with the server's stderr if it dies."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"the HTTPS API on port {port} did not start within {timeout} s"
        time.sleep(0.2)
