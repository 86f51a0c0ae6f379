"""The worker's CPU priority, below the API's: requests are answered while tasks run.

Why: on a host whose cores the tasks fill, every process got an equal share of the CPU, so the API
answered no faster than the worker ran tasks. Measured on 2 cores (SQLite, 32 clients sending single
``POST /dispatch`` while the dispatcher ran the tasks): 544-771 accepted/s with equal shares, 983-1,051/s
with the worker lowered, the tasks then run by the CPU the API leaves. Nothing else changes for the
worker: when the API is idle it has the cores it had.

How, on Linux: ``nice`` is per thread, so every thread of the process is lowered (threads made later
inherit it from the one that makes them); and because ``orch up`` and systemd start each component in a
session of its own, the kernel's autogroup scheduler (``/proc/sys/kernel/sched_autogroup_enabled``)
shares the CPU between sessions first and a thread's ``nice`` only counts inside its session, so the
session's own nice (``/proc/self/autogroup``) is lowered as well. Where systemd's CPU controller is on,
the unit's ``CPUWeight=`` decides instead (infra/systemd). Elsewhere ``setpriority`` is process-wide;
on Windows the process gets the below-normal priority class. Lowering one's own priority needs no
privilege, so none of this can fail for want of one; what the platform lacks is skipped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

TASKS = Path("/proc/self/task")
AUTOGROUP = Path("/proc/self/autogroup")


def lower_own_priority(nice: int) -> None:
    """Run this process at ``nice`` (0-19; 0 leaves it as it is), its threads and session included.
    Never raises a priority: one already lower (``nice -n 15 orch up``) is kept."""
    if nice <= 0:
        return
    if sys.platform == "win32":
        import psutil

        psutil.Process().nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)
        return
    if not (sys.platform.startswith("linux") and TASKS.is_dir()):
        _lower(0, nice)
        return
    for thread in TASKS.iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            _lower(int(thread.name), nice)
    with contextlib.suppress(FileNotFoundError):  # a kernel built without autogroups
        if nice > int(AUTOGROUP.read_text(encoding="ascii").split()[-1]):  # "/autogroup-138 nice 0"
            AUTOGROUP.write_text(str(nice), encoding="ascii")


def _lower(who: int, nice: int) -> None:
    if nice > os.getpriority(os.PRIO_PROCESS, who):
        os.setpriority(os.PRIO_PROCESS, who, nice)
