"""Running a process below the API's CPU priority: the worker and its Prefect server, so that requests
are answered while tasks fill the cores.

Why: on a host whose cores the tasks fill, every process got an equal share of the CPU, so the API
answered no faster than the worker ran tasks. Measured on the user's path (docs/benchmarks.md: 32 clients
sending single ``POST /dispatch`` while the dispatcher runs them, medians of 5 runs): 711 -> 1,110
accepted/s on SQLite and 672 -> 953/s on PostgreSQL; batches 3,064 -> 4,886 and 4,574 -> 5,452 tasks/s;
tasks then finish about a tenth slower end to end, on what the API leaves. The Prefect server is lowered
with the worker, to the same level: it records what the worker runs, and left above the worker it took
each of the worker's reports as it came, for about 50 % more CPU per task, and tasks finished a fifth
slower; at one level they finished as fast as with neither lowered. When the API is idle they have the
cores they had.

How, on Linux: ``orch up`` (:mod:`orch.stack.supervisor`) calls :func:`lower_own_priority` in each
child between ``fork`` and ``exec``, after the child's ``setsid``. ``nice`` is per thread, and a thread
inherits it from the thread that makes it, so setting it there covers every thread the program will
make. Because each component runs in a session of its own, the kernel's autogroup scheduler
(``/proc/sys/kernel/sched_autogroup_enabled``) shares the CPU between sessions first and a thread's
``nice`` only counts inside its session; so the session's own nice (``/proc/self/autogroup``) is lowered
too. Elsewhere ``setpriority`` is process-wide. Lowering one's own priority needs no privilege; what the
platform lacks or refuses is skipped, since a stack at equal priority still works.
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
    if not (sys.platform.startswith("linux") and TASKS.is_dir()):
        _lower(0, nice)
        return
    for thread in TASKS.iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            _lower(int(thread.name), nice)
    with contextlib.suppress(OSError):  # a kernel without autogroups, or a /proc that refuses the write
        if nice > int(AUTOGROUP.read_text(encoding="ascii").split()[-1]):  # "/autogroup-138 nice 0"
            AUTOGROUP.write_text(str(nice), encoding="ascii")


def _lower(who: int, nice: int) -> None:
    with contextlib.suppress(PermissionError):  # a sandbox that refuses even lowering: equal priority
        if nice > os.getpriority(os.PRIO_PROCESS, who):
            os.setpriority(os.PRIO_PROCESS, who, nice)
