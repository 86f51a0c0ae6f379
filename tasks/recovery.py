"""Recovery steps as tasks. Each returns its report (found, did, ok); none is retried blindly, since a
step that restores a database or removes files must not repeat without someone reading why."""

from __future__ import annotations

from typing import Any

from prefect import task

from orch.config.runtime import get_settings
from orch.recovery import steps


@task(name="check-disk-space")
def disk_space() -> dict[str, Any]:
    return steps.disk_space(get_settings())


@task(name="check-database")
def database() -> dict[str, Any]:
    return steps.database(get_settings())


@task(name="clear-stale-locks", retries=2, retry_delay_seconds=1)
def stale_locks() -> dict[str, Any]:
    return steps.stale_locks(get_settings())


@task(name="reset-failed-tasks", retries=2, retry_delay_seconds=1)
def failed_tasks() -> dict[str, Any]:
    return steps.failed_tasks(get_settings())


@task(name="check-health")
def health() -> dict[str, Any]:
    return steps.health(get_settings())


@task(name="notify-recovery", retries=2, retry_delay_seconds=2)
def notify(procedure: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    return steps.notify(get_settings(), procedure, reports)
