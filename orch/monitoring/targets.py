"""Targets: what ORCH watches and heals, how it checks their health and how it acts on them.

Every action really acts (a command, ``systemctl``, PowerShell's ``Restart-Service``, a signal to a process
``orch up`` supervises, a core reservation that stops dispatch, a Prefect deployment run): healing that
only logs what it would do is what ``self_healing.dry_run`` is for.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import httpx

from orch.config.schema import Settings, TargetSettings
from orch.errors import OrchError
from orch.http import http_client
from orch.logging_config import get_logger

log = get_logger(__name__)
ACTION_TIMEOUT = 120.0


class ActionFailed(OrchError):
    """A healing action could not be carried out (not: it ran but the target is still unhealthy)."""


class UnknownTarget(OrchError):
    """No target of that name is configured."""


@dataclass(frozen=True)
class Health:
    healthy: bool | None  # None: cannot tell here (e.g. not running under `orch up`)
    detail: str
    latency_ms: float | None = None


def api_probe_host(settings: Settings) -> str:
    """Where to reach ORCH's own API: loopback when it listens on every interface (0.0.0.0, ::, empty)."""
    host = settings.api.host
    with contextlib.suppress(ValueError):  # a name (localhost) is no address: probed as it is
        host = "127.0.0.1" if not host or ipaddress.ip_address(host).is_unspecified else host
    return host


def orch_targets(settings: Settings) -> list[TargetSettings]:
    """ORCH's own API and worker, restarted through `orch up`'s supervisor."""
    host = api_probe_host(settings)
    return [
        TargetSettings(name="orch-api", health_check={"url": f"http://{host}:{settings.api.port}/healthz"},
                       restart={"supervised": "api"}),
        TargetSettings(name="orch-worker", health_check={"supervised": "worker"}, restart={"supervised": "worker"}),
    ]


def configured_targets(settings: Settings) -> list[TargetSettings]:
    """The configured targets, plus ORCH's own unless disabled or overridden by a target of the same name."""
    targets = list(settings.monitoring.targets)
    if settings.monitoring.orch_targets:
        names = {target.name for target in targets}
        targets += [target for target in orch_targets(settings) if target.name not in names]
    return targets


def find_target(settings: Settings, name: str) -> TargetSettings:
    for target in configured_targets(settings):
        if target.name == name:
            return target
    known = ", ".join(t.name for t in configured_targets(settings)) or "none"
    raise UnknownTarget(f"unknown target {name!r} (configured: {known})")


def healing_plan(settings: Settings, target: TargetSettings) -> list[str]:
    """The actions to try, in order: the target's own list, else self_healing.actions it configures."""
    order = target.actions or settings.monitoring.self_healing.actions
    return [action for action in order if getattr(target, action) is not None]


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


@lru_cache(maxsize=1)
def probe_client() -> httpx.Client:
    """One HTTP client per process for the sweep's probes: building one costs ~20 ms of CPU (its TLS
    context), and a sweep probes the API, Prefect and every target. Timeouts are given per request."""
    return http_client(5.0)


def check_health(settings: Settings, target: TargetSettings) -> Health:
    """Run the target's health check once; never raises."""
    check = target.health_check
    started = time.perf_counter()
    if check.url:
        try:
            status = probe_client().get(check.url, timeout=check.timeout).status_code
        except httpx.HTTPError as exc:
            return Health(False, f"GET {check.url}: {type(exc).__name__}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        if status != check.expected_status:
            return Health(False, f"GET {check.url}: HTTP {status}, expected {check.expected_status}", latency)
        return Health(True, f"GET {check.url}: HTTP {status}", latency)
    if check.command:
        try:
            result = subprocess.run(check.command, capture_output=True, text=True, check=False,
                                    timeout=check.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Health(False, f"{check.command[0]}: {type(exc).__name__}: {exc}")
        latency = round((time.perf_counter() - started) * 1000, 1)
        output = (result.stdout + result.stderr).strip().splitlines()
        detail = f"{check.command[0]} exited {result.returncode}" + (f": {output[-1][:200]}" if output else "")
        return Health(result.returncode == 0, detail, latency)
    pid = supervised_pid(settings, check.supervised or "")
    if pid is None:
        return Health(None, f"{check.supervised} is not running under orch up")
    return Health(pid > 0, f"{check.supervised} pid {abs(pid)} " + ("alive" if pid > 0 else "exited"))


def run_action(settings: Settings, target: TargetSettings, action: str) -> str:
    """Carry out ``action`` on ``target`` once; returns what was done, raises :class:`ActionFailed`."""
    spec = getattr(target, action)
    if spec is None:
        raise ActionFailed(f"target {target.name} does not configure {action}")
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
        raise ActionFailed(f"{argv[0]}: {type(exc).__name__}: {exc}") from None
    output = (result.stdout + result.stderr).strip().splitlines()
    if result.returncode != 0:
        raise ActionFailed(f"{argv[0]} exited {result.returncode}" + (f": {output[-1][:300]}" if output else ""))
    return f"ran {' '.join(argv)[:300]}"


def _restart_supervised(settings: Settings, process: str) -> str:
    """Stop the process; `orch up`'s watch loop starts it again (its restart backoff applies)."""
    pid = supervised_pid(settings, process)
    if pid is None:
        raise ActionFailed(f"{process} is not running under orch up (no {pid_file(settings, process)})")
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
        raise ActionFailed(f"deployment {name}: {type(exc).__name__}: {exc}") from None
    state = flow_run.state
    if state is None or not state.is_completed():
        raise ActionFailed(f"deployment {name} run {flow_run.id} ended {state.name if state else 'unknown'}")
    return f"ran deployment {name} (flow run {flow_run.id})"

