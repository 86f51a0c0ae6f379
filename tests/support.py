"""Helpers the tests share (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

BIN = Path(sys.executable).parent
T = TypeVar("T")


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


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.2,
               ignore: tuple[type[BaseException], ...] = (), details: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail naming ``what``.

    For waiting on an observable effect (an HTTP answer, a row, a file, a state), never for letting
    another process "get somewhere": the timeout is a generous upper bound for a loaded machine, not a
    claim about speed, so nothing a test asserts depends on it. Exceptions in ``ignore`` mean "not
    yet" (a server still starting); an assertion the predicate raises (a process that died) fails at
    once. ``details`` (a log tail, say) is added to either failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except ignore:
            pass
        except AssertionError as exc:
            if details is None:
                raise
            raise AssertionError(f"{exc}\n{details()}") from None
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                                 + (f"\n{details()}" if details else ""))
        time.sleep(interval)


PREFECT_FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def settled_run(fetch: Callable[[], dict[str, Any]], what: str, timeout: float = 30) -> dict[str, Any]:
    """A Prefect run once its state is final, as ``fetch`` reads it.

    Prefect 3 records a task run's states from the events its engine emits, after the run has ended
    in the client's eyes: a dispatch flow can return while the server still shows an earlier state
    (Scheduled for an awaited retry, Running). The test then asserts which final state it is.
    """
    return wait_until(lambda: (run := fetch()) and run["state"]["type"] in PREFECT_FINAL_STATES and run,
                      timeout, f"{what} to reach a final state")


def answers_200(url: str, process: subprocess.Popen[Any] | None = None, **kwargs: Any) -> bool:
    """One readiness probe for :func:`wait_until`: ``GET url`` is 200; fails at once if ``process`` died."""
    import httpx

    if process is not None:
        assert process.poll() is None, f"the process serving {url} exited with code {process.returncode}"
    try:
        return httpx.get(url, timeout=2, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_https(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Until ``GET https://127.0.0.1:<port>/healthz`` answers 200; fails with the server's stderr if it dies."""
    def up() -> bool:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        return answers_200(f"https://127.0.0.1:{port}/healthz", verify=False)

    wait_until(up, timeout, f"the HTTPS API on port {port}")


def prefect_auth(auth_string: str | None = None) -> dict[str, str]:
    """The header a Prefect server started with an auth string requires: ``auth_string``, else the
    session server's (conftest exports it as PREFECT_API_AUTH_STRING). ORCH's own helper builds it."""
    from orch.config.schema import PrefectSettings
    from orch.prefect_api import prefect_headers

    given = auth_string if auth_string is not None else os.environ.get("PREFECT_API_AUTH_STRING")
    return prefect_headers(PrefectSettings(auth_string=given))
