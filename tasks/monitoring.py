"""The monitoring sweep's tasks: one per thing measured (each retried on its own), then store, evaluate
and act. Collectors never fail because what they measure is down: that is a sample."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE

from orch.config.runtime import get_settings
from orch.monitoring import alerts, hosts, rules, samples, target_checks, targets, zombies
from orch.monitoring.samples import Sample
from orch.storage.engine import DatabaseCorrupt, is_corruption_error


def retry_unless_corrupt(_task: Any, _run: Any, state: Any) -> bool:
    """Retry what waiting may cure (a busy database, a slow service), not a damaged database file."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - the failure being judged
        return not (isinstance(exc, DatabaseCorrupt) or is_corruption_error(exc))
    return True


RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [1, 3], "cache_policy": NO_CACHE,
                           "retry_condition_fn": retry_unless_corrupt}


@task(name="system-metrics", **RETRIES)
def system_metrics() -> list[Sample]:
    return samples.collect_system(get_settings())


@task(name="api-metrics", **RETRIES)
def api_metrics() -> list[Sample]:
    settings = get_settings()
    return samples.collect_api(settings, window_seconds=settings.monitoring.interval)


@task(name="queue-metrics", **RETRIES)
def queue_metrics() -> list[Sample]:
    return samples.collect_queue(get_settings())


@task(name="lock-metrics", **RETRIES)
def lock_metrics() -> list[Sample]:
    return samples.collect_locks(get_settings())


@task(name="database-health", **RETRIES)
def database_metrics() -> list[Sample]:
    return samples.collect_database(get_settings())


@task(name="prefect-health", **RETRIES)
def prefect_metrics() -> list[Sample]:
    return samples.collect_prefect(get_settings())


@task(name="prefect-zombies", **RETRIES)
def prefect_zombies() -> list[Sample]:
    """Crash ORCH's flow runs (and their task runs) left Running by an executor that is gone, and count
    them: ``prefect_zombie_runs``. Healing here, not in self-heal: it is ORCH's own engine, no approval."""
    try:
        found = zombies.heal(get_settings())
    except httpx.HTTPError:
        return []  # Prefect unreachable or refusing: ``prefect_up`` says so, no count is better than 0
    return [Sample("prefect_zombie_runs", float(len(found.zombies)))]


@task(name="target-health", task_run_name="target-health {name}", **RETRIES)
def target_health(name: str) -> list[Sample]:
    """``target_up`` 1/0 and the check's latency; nothing when it cannot be told here (not under orch up)."""
    settings = get_settings()
    health = target_checks.check_health(settings, targets.find_target(settings, name))
    if health.healthy is None:
        return []
    found = [Sample("target_up", 1.0 if health.healthy else 0.0, name)]
    if health.latency_ms is not None:
        found.append(Sample("target_check_ms", health.latency_ms, name))
    return found


@task(name="request-heal", task_run_name="request-heal {alert[target]}", **RETRIES)
def request_heal(alert: dict[str, Any]) -> dict[str, Any]:
    """The self-heal run for a firing target alert, on the queue of the target's host (orch/monitoring/hosts.py);
    when that host has no live worker, a run here that escalates at once, saying why."""
    settings = get_settings()
    return hosts.create_heal_run(settings, alert, hosts.target_host(settings, targets.find_target(settings,
                                                                                                 alert["target"])))


@task(name="lost-heals", **RETRIES)
def lost_heals(target_names: list[str]) -> list[alerts.LostHeal]:
    """Heal runs that ended without acting, put back so this sweep asks again (orch.monitoring.alerts)."""
    from orch.storage.types import utcnow

    return alerts.lost_heals(get_settings(), target_names, utcnow())


@task(name="store-samples", **RETRIES)
def store_samples(found: list[Sample], at: datetime | None = None) -> int:
    """Store one sweep's samples stamped ``at``: the sweep's start, before any check ran, so a sample
    stamped after a heal ended was measured after it too."""
    return samples.store(get_settings(), found, at)


@task(name="evaluate-alerts", **RETRIES)
def evaluate_alerts(target_names: list[str]) -> list[alerts.Notice]:
    """Rules on the stored samples, then the state machine; returns what must be said or healed."""
    from orch.storage.types import utcnow

    settings = get_settings()
    now = utcnow()
    return alerts.apply(settings, rules.evaluate(settings, target_names, now), now)
