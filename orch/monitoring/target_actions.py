"""Healing actions on a target: a command, ``systemctl``, PowerShell's ``Restart-Service``, a signal to a
process ``orch up`` supervises (it restarts it), a core reservation that stops dispatch, a Prefect
deployment run.

Every action really acts: healing that only logs what it would do is what ``self_healing.dry_run`` is for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from orch.config.schema import Settings, TargetSettings
from orch.errors import OrchError
from orch.monitoring.pid_files import pid_file, supervised_pid

ACTION_TIMEOUT = 120.0


class TargetActionFailed(OrchError):
    """A healing action could not be carried out (not: it ran but the target is still unhealthy)."""

    status_code = 502  # the target's or its tool's failure, not the caller's mistake


def run_action(settings: Settings, target: TargetSettings, action: str) -> str:
    """Carry out ``action`` on ``target`` once; returns what was done, raises :class:`TargetActionFailed`."""
    spec = getattr(target, action)
    if spec is None:
        raise TargetActionFailed(f"target {target.name} does not configure {action}")
    if getattr(spec, "command", None):
        return _run_command(spec.command)
    if action == "restart":
        if spec.systemd_unit:
            return _run_command(["systemctl", "restart", spec.systemd_unit])
        if spec.windows_service:
            return _run_command(["powershell", "-NoProfile", "-Command",
                                 f"Restart-Service -Name '{spec.windows_service}' -Force"])
        return _restart_supervised(settings, spec.supervised)
    if action == "isolate":
        return isolate_core(settings, spec.core, target.name)
    return _run_deployment(spec.deployment)


def _run_command(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=ACTION_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetActionFailed(f"{argv[0]}: {type(exc).__name__}: {exc}") from None
    output = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0:
        raise TargetActionFailed(f"{argv[0]} exited {result.returncode}"
                                 + (f": {output[-1][:300]}" if output else ""))
    return f"ran {' '.join(argv)[:300]}"


def _restart_supervised(settings: Settings, process: str) -> str:
    """Stop the process; `orch up`'s watch loop starts it again (its restart backoff applies)."""
    pid = supervised_pid(settings, process)
    if pid is None:
        raise TargetActionFailed(f"{process} is not running under orch up (no {pid_file(settings, process)})")
    if pid > 0:
        os.kill(pid, signal.SIGTERM if sys.platform != "win32" else signal.SIGINT)
        return f"stopped {process} pid {pid}; orch up restarts it"
    return f"{process} pid {-pid} had exited; orch up restarts it"


def isolate_core(settings: Settings, core: str, target: str) -> str:
    """Stop dispatching to ``core``: reserve it for an owner no task has (dispatch skips reserved cores)."""
    from orch.dispatch.reservations import isolate_core as isolate

    isolate(settings, core, target)
    return f"core {core} isolated: no new tasks are dispatched to it (undo: orch cores release {core})"


def _run_deployment(name: str) -> str:
    """Run the rollback deployment and wait for it; anything but Completed is a failed action."""
    from prefect.deployments import run_deployment

    try:
        flow_run = run_deployment(name, timeout=ACTION_TIMEOUT, tags=["orch", "rollback"])
    except Exception as exc:  # noqa: BLE001 - an unknown deployment or an unreachable server
        raise TargetActionFailed(f"deployment {name}: {type(exc).__name__}: {exc}") from None
    state = flow_run.state
    if state is None or not state.is_completed():
        raise TargetActionFailed(f"deployment {name} run {flow_run.id} ended {state.name if state else 'unknown'}")
    return f"ran deployment {name} (flow run {flow_run.id})"
