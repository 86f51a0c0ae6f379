"""Checks before ``orch up`` starts anything, each ending in one line that names the cause."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from orch.errors import OrchError


class PreflightError(OrchError):
    """A condition the operator must fix before the stack can start."""


def ensure_port_free(host: str, port: int, what: str, setting: str) -> None:
    """Bind the port the way a server would; fail with the setting that moves it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreflightError(
                    f"port {port} on {host} is already in use; the {what} needs it (set {setting})"
                ) from None
            raise PreflightError(f"cannot use {host}:{port} for the {what}: {exc.strerror}") from None


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` if needed and prove a file can be written there (read-only mounts, permissions)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-", delete=True).close()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PreflightError(f"{what} {path} is not writable: {reason}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PreflightError(f"{what} {path} is not writable")
