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
