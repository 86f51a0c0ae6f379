"""The pid files `orch up`'s supervisor writes (``<data_dir>/logs/<process>.pid``), read to check and
restart ORCH's own processes (targets with ``supervised``) and to measure their memory."""

from __future__ import annotations

from pathlib import Path

from orch.config.schema import Settings


def pid_file(settings: Settings, process: str) -> Path:
    return Path(settings.data_dir) / "logs" / f"{process}.pid"


def supervised_pid(settings: Settings, process: str) -> int | None:
    """The live pid `orch up` recorded for ``process``, or None when it is not running under `orch up`."""
    try:
        pid = int(pid_file(settings, process).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else -pid  # negative: recorded but dead


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
