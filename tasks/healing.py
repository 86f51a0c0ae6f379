"""The self-heal flow's tasks: one attempt of one action, and the health check that judges it.

No Prefect retries here on purpose: the flow's own loop is the retry policy (``max_retries`` attempts per
action, backoff, a health check after each, escalation); Prefect retries would repeat an attempt without
the health check between.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from orch.config.runtime import get_settings
from orch.monitoring.target_actions import TargetActionFailed, run_action
from orch.monitoring.target_checks import check_health
from orch.monitoring.targets import find_target

POLL_SECONDS = 0.5


@task(name="heal-attempt", task_run_name="{action} {target} (attempt {attempt})", cache_policy=NO_CACHE)
def attempt_action(target: str, action: str, attempt: int) -> dict[str, Any]:
    """Carry out the action once; a failure to carry it out is a result (``ok: False``), not an exception."""
    settings = get_settings()
    try:
        detail, ok = run_action(settings, find_target(settings, target), action), True
    except TargetActionFailed as exc:
        detail, ok = str(exc), False
    return {"step": action, "attempt": attempt, "ok": ok, "detail": detail}


@task(name="health-check", task_run_name="health-check {target}", cache_policy=NO_CACHE)
def healthy_within(target: str, seconds: float) -> dict[str, Any]:
    """Poll the target's health check until healthy or ``seconds`` pass (a restart takes a moment)."""
    settings = get_settings()
    spec = find_target(settings, target)
    deadline = time.monotonic() + seconds
    while True:
        health = check_health(settings, spec)
        if health.healthy or time.monotonic() >= deadline:
            return {"step": "health_check", "ok": bool(health.healthy), "detail": health.detail}
        time.sleep(POLL_SECONDS)
