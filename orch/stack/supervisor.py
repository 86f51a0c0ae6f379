"""Start, watch and stop the processes of the local stack, leaving no orphans.

Why this is more than ``Popen`` + ``terminate``: Prefect's process worker starts every flow run in a
*new session*, so signalling the worker's process group misses them, and a worker that exits first
would leave them running under init. On Linux the supervisor therefore makes itself a child subreaper
(orphans are re-parented to it, where it can find and stop them) and asks the kernel to SIGTERM each
direct child if the supervisor itself dies. Shutdown takes the whole descendant tree: SIGTERM, a grace
period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from orch.stack.priority import lower_own_priority, restore_priority

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Component:
    """One process of the stack. ``oneshot`` components are expected to exit 0 and are not restarted.
    A ``gated`` one starts with a pipe as its standard input and waits for :meth:`Supervisor.release`
    (:mod:`orch.stack.prestart`: its imports overlap what it waits for). A ``nice`` one runs below the
    others' CPU priority (:mod:`orch.stack.priority`)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    oneshot: bool = False
    gated: bool = False
    nice: int = 0


@dataclass
class Running:
    component: Component
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


def _libc_prctl(option: int, value: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):  # best effort: no libc prctl, no extra safety
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _child_setup(nice: int) -> None:  # runs in the child between fork and exec, after its setsid
    _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    lower_own_priority(nice)  # before exec: one thread, and every thread it makes inherits it


class Supervisor:
    """Owns the stack's child processes; every log goes to ``<log_dir>/<component>.log``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, Running] = {}
        _libc_prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def start(self, component: Component, restarts: int = 0) -> Running:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{component.name}.log", "ab")  # noqa: SIM115 - kept open while it runs
        log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting {component.name}\n".encode())
        log.flush()
        kwargs: dict[str, object] = {}
        if os.name == "posix":
            kwargs.update(start_new_session=True, preexec_fn=functools.partial(_child_setup, component.nice))
        else:
            kwargs.update(creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)  # type: ignore[attr-defined]
        process = subprocess.Popen(  # noqa: S603 - argv built by the stack, never from user input
            component.argv, cwd=component.cwd, env=component.env,
            stdin=subprocess.PIPE if component.gated else subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]
        if os.name != "posix" and component.nice > 0:
            with contextlib.suppress(psutil.Error):  # it died already: the watch loop sees that
                psutil.Process(process.pid).nice(psutil.BELOW_NORMAL_PRIORITY_CLASS)  # type: ignore[attr-defined]
        running = Running(component, process, log, restarts=restarts)
        self.running[component.name] = running
        # Self-healing restarts "a process the stack supervises" by stopping the pid recorded here;
        # the watch loop then restarts it (orch.monitoring.pid_files reads <log_dir>/<name>.pid).
        (self.log_dir / f"{component.name}.pid").write_text(f"{process.pid}\n", encoding="utf-8")
        return running

    def release(self, name: str) -> None:
        """Let a gated component run: one line on its standard input, then end of input."""
        running = self.running.get(name)
        if running is None or running.process.stdin is None or running.process.stdin.closed:
            return
        with contextlib.suppress(OSError):  # it died meanwhile: the watch loop sees that
            running.process.stdin.write(b"go\n")
            running.process.stdin.close()

    def exited(self) -> list[Running]:
        """Components whose process has ended since the last look (they stay listed until restarted)."""
        self._reap_orphans()
        return [r for r in self.running.values() if r.process.poll() is not None]

    def forget(self, name: str) -> None:
        running = self.running.pop(name, None)
        if running is not None:
            _close_stdin(running)
            running.log.close()

    def log_tail(self, name: str, lines: int = 5) -> list[str]:
        """The last lines a component printed: what an operator needs when it fails."""
        return tail_lines(self.log_dir / f"{name}.log", lines)

    def stop_all(self, grace: float = 7.0, hard: float = 2.0,
                 on_progress: Callable[[str], None] | None = None, last: Collection[str] = ()) -> list[int]:
        """SIGTERM the whole tree, wait ``grace`` seconds, SIGKILL what is left; return leftover pids.

        The components named in ``last`` (with their descendants) are sent SIGTERM only once everything
        else has ended, within the same grace: the Prefect server must outlive the worker and the flow
        runs, which report their final states to it as they stop (stopped together, they retried against
        a closed port until the grace ran out and were killed). ``on_progress`` hears how many processes
        are stopped and, when the grace was not enough, which ones were killed.
        """
        me = psutil.Process()
        tree = self._descendants(me)
        if on_progress and tree:
            on_progress(f"stopping {len(tree)} process(es)")
        deadline = time.monotonic() + grace
        late = self._trees(last)
        early = [proc for proc in tree if proc not in late]
        for proc in tree:  # the stop at the supervisor's priority, not at the level tasks ran at
            restore_priority(proc.pid)
        for proc in early:
            _signal(proc, terminate=True)
        _, alive = psutil.wait_procs(early, timeout=max(0.0, deadline - time.monotonic()))
        for proc in late:
            _signal(proc, terminate=True)
        _, alive = psutil.wait_procs(alive + late, timeout=max(0.0, deadline - time.monotonic()))
        leftovers = [proc for proc in alive + [p for p in self._descendants(me) if p not in alive] if _alive(proc)]
        if on_progress and leftovers:  # the operator (and a test) can tell a clean stop from a forced one
            names = {r.process.pid: r.component.name for r in self.running.values()}
            on_progress(f"killing {len(leftovers)} process(es) still running after {grace:g} s: "
                        + ", ".join(f"{names.get(p.pid, 'pid')} {p.pid}" for p in leftovers))
        for proc in leftovers:
            _signal(proc, terminate=False)
        _, still = psutil.wait_procs(leftovers, timeout=hard)
        for running in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                running.process.wait(timeout=0.1)
            _close_stdin(running)
            running.log.close()
        self.running.clear()
        self._reap_orphans()
        return [p.pid for p in still]

    def _trees(self, names: Collection[str]) -> list[psutil.Process]:
        """The processes of the named running components and all their descendants."""
        found: list[psutil.Process] = []
        for name in names:
            running = self.running.get(name)
            if running is None or running.process.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):  # ended meanwhile: nothing of it to stop
                proc = psutil.Process(running.process.pid)
                found += [proc, *self._descendants(proc)]
        return found

    @staticmethod
    def _descendants(me: psutil.Process) -> list[psutil.Process]:
        try:
            return me.children(recursive=True)
        except psutil.Error:
            return []

    def _reap_orphans(self) -> None:
        """Collect exit statuses of re-parented orphans so they do not linger as zombies."""
        if os.name != "posix":
            return
        managed = {r.process.pid for r in self.running.values()}
        for child in self._descendants(psutil.Process()):
            with contextlib.suppress(psutil.Error, ChildProcessError):  # it may be gone already
                if child.pid not in managed and child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last non-empty lines of a log, without the supervisor's own ``---`` start markers."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip() and not line.startswith("---")][-lines:]


def _alive(proc: psutil.Process) -> bool:
    """Still running: a zombie has ended already and only waits to be reaped."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _close_stdin(running: Running) -> None:
    if running.process.stdin is not None:
        with contextlib.suppress(OSError):
            running.process.stdin.close()


def _signal(proc: psutil.Process, *, terminate: bool) -> None:
    with contextlib.suppress(psutil.Error):  # already gone is what we wanted
        proc.terminate() if terminate else proc.kill()
