"""The guide's memory monitor (``scripts/memory_monitor.py``) for ORCH's processes.

The guide measured its own process; a CLI's own memory says nothing, so this reports the processes
``orch up`` supervises (their pid files) and any pid given, and keeps the guide's GC statistics and
forced collection for the process that runs it (one process cannot collect another's garbage).
"""

from __future__ import annotations

import gc
import os
from typing import Any

from orch.config.schema import Settings
from orch.monitoring.pid_files import supervised_pid

SUPERVISED = ("api", "worker")


def process_memory(pid: int, name: str, threshold: float) -> dict[str, Any]:
    import psutil

    try:
        proc = psutil.Process(pid)
        info = proc.memory_info()
        percent = proc.memory_percent()
    except psutil.Error as exc:
        return {"name": name, "pid": pid, "error": f"{type(exc).__name__}: {exc}"}
    return {"name": name, "pid": pid, "rss_mb": info.rss / 1024**2, "vms_mb": info.vms / 1024**2,
            "memory_percent": percent, "high": percent > threshold}


def memory_report(settings: Settings, extra_pids: list[int], threshold: float = 80.0) -> dict[str, Any]:
    """Memory of ORCH's processes; collects this process's garbage when it is above ``threshold``."""
    processes = [("orch (this command)", os.getpid())]
    for name in SUPERVISED:
        pid = supervised_pid(settings, name)
        if pid is not None and pid > 0:
            processes.append((name, pid))
    processes += [(f"pid {pid}", pid) for pid in extra_pids]
    report = [process_memory(pid, name, threshold) for name, pid in processes]
    collected = gc.collect() if report[0].get("high") else None
    return {"processes": report, "gc_stats": gc.get_stats(), "collected": collected, "threshold": threshold}
