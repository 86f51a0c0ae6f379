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

A stop is work the operator waits for, so :func:`restore_priority` gives a lowered process back the
supervisor's priority before it is sent SIGTERM: on a machine whose cores were busy with other work, a
Prefect server at nice 10 got about a tenth of a core and once took longer than the 7 s grace to shut
down, and was killed. Raising a priority again needs privilege (root, or ``CAP_SYS_NICE``, as a system
service usually has); without it the process stops at the priority it ran at.
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
    session = _group_nice(AUTOGROUP)
    if session is not None and nice > session:
        with contextlib.suppress(OSError):  # a /proc that refuses the write
            AUTOGROUP.write_text(str(nice), encoding="ascii")


def restore_priority(pid: int) -> None:
    """Give process ``pid`` (its threads and its session's autogroup) this process's priority back, where
    allowed; a process that ended meanwhile, or a refusal, leaves it as it is."""
    if not sys.platform.startswith("linux"):
        return
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(OSError):  # ended meanwhile, or its /proc entry is gone
        for thread in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # PermissionError without privilege; a thread that ended
                if os.getpriority(os.PRIO_PROCESS, int(thread.name)) > mine:
                    os.setpriority(os.PRIO_PROCESS, int(thread.name), mine)
        group = Path(f"/proc/{pid}/autogroup")
        theirs = _group_nice(group)
        # A supervisor in no autogroup of its own (the root group: started by a service manager or a CI
        # runner that never made a session) competes at the weight of nice 0.
        own = _group_nice(AUTOGROUP)
        own = 0 if own is None else own
        if theirs is not None and theirs > own:
            group.write_text(str(own), encoding="ascii")


def _group_nice(path: Path) -> int | None:
    """The nice of the autogroup ``path`` (``/proc/<pid>/autogroup``) shows, or None where there is none to
    set: a kernel without autogroups (no file), or a process in the root group, for which the kernel shows
    an empty file (every process of a session never made since boot, as under some CI runners)."""
    try:
        words = path.read_text(encoding="ascii").split()  # "/autogroup-138 nice 0"
    except OSError:
        return None
    return int(words[-1]) if len(words) == 3 and words[1] == "nice" else None


def _lower(who: int, nice: int) -> None:
    with contextlib.suppress(PermissionError):  # a sandbox that refuses even lowering: equal priority
        if nice > os.getpriority(os.PRIO_PROCESS, who):
            os.setpriority(os.PRIO_PROCESS, who, nice)
