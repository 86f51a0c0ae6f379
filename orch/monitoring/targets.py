"""Targets: which things ORCH watches and heals (the configured ones and ORCH's own), and the order of
the actions that heal each.

How a target's health is checked is in :mod:`orch.monitoring.target_checks`, how an action is carried
out in :mod:`orch.monitoring.target_actions`, and the pids `orch up` records in
:mod:`orch.monitoring.pid_files`.
"""

from __future__ import annotations

import contextlib
import ipaddress

from orch.config.schema import Settings, TargetSettings
from orch.errors import OrchError


class UnknownTarget(OrchError):
    """No target of that name is configured."""

    status_code = 404


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
