"""Who holds a lease: ``host:pid:nonce:boot``, and whether that holder is provably gone.

A dispatcher killed with SIGKILL cannot release its leases; waiting for them to lapse stalls its cores for
``dispatch.lease_seconds``. Its successor on the same machine can do better: a lease owner on this host,
of this boot (the kernel's boot id: a hostname alone can repeat across machines or a reboot), whose pid
no longer exists, can no longer be running anything, so its tasks may go back to the queue at once. Any
doubt (another host, another boot, no boot id on this platform, a live pid that may have been reused)
means wait for the lease, which is always safe.

The same name, as the label :data:`EXECUTOR_LABEL` of a Prefect flow run, says which process executes the
run, so the monitoring sweep can tell a run whose process was killed (Prefect shows it Running for good)
from one still alive, with the same check (orch/monitoring/zombies.py).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from uuid import uuid4

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@lru_cache(maxsize=1)
def boot_id() -> str:
    """The first 8 hex digits of the kernel's boot id, or "" where there is none (Windows, macOS)."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip().replace("-", "")[:8]
    except OSError:
        return ""


def dispatcher_id() -> str:
    """A fresh lease owner name for one dispatcher in this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}:{boot_id()}"


EXECUTOR_LABEL = "orch.executor"  # a Prefect flow run label: the owner name of the process executing the run


def host_prefix() -> str:
    """What every lease owner of this host starts with (for a query that narrows to them)."""
    return f"{socket.gethostname()}:"


def local_pid(owner: str) -> int | None:
    """The pid of ``owner`` when it names a process of this host and this boot (so its liveness can be
    told here), else None: another host, another boot, no boot id, or not an owner name at all."""
    parts = owner.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return None  # an external core ("core:<id>") or an older owner name
    host, pid, _nonce, boot = parts
    if host != socket.gethostname() or not boot or boot != boot_id():
        return None
    return int(pid)


def worker_pid(infrastructure_pid: str) -> int | None:
    """The pid in Prefect's process-worker ``infrastructure_pid`` (``host:pid``) when the host is this one.

    Weaker than an owner name: with no boot id, a pid missing here proves the process gone only if no
    other machine shares this hostname; a pid present (reused after a reboot) merely keeps a run alive.
    """
    host, _, pid = infrastructure_pid.partition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def gone(owner: str) -> str | None:
    """Why ``owner`` is provably no longer running anything, or None when that is not certain."""
    pid = local_pid(owner)
    return None if pid is None else pid_gone(pid, f"dispatcher {owner}")


def pid_gone(pid: int, what: str) -> str | None:
    """The one liveness check: why ``what`` (process ``pid`` of this host) is gone, or None while that pid
    is this process or still exists."""
    if pid == os.getpid():
        return None
    import psutil

    if psutil.pid_exists(pid):
        return None
    return f"{what} is gone (pid {pid} no longer exists on {socket.gethostname()})"
