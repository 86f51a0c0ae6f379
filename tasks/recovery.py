"""Recovery steps as tasks. Each returns its report (found, did, ok); none is retried blindly, since a
step that restores a database or removes files must not repeat without someone reading why. With
``dry_run`` a step only reports what it would do."""

from __future__ import annotations

from typing import Any

from prefect import task

from orch.config.runtime import get_settings
from orch.recovery import steps


@task(name="check-disk-space")
def disk_space(dry_run: bool = False) -> dict[str, Any]:
    return steps.disk_space(get_settings(), dry_run)


@task(name="check-database")
def database(dry_run: bool = False) -> dict[str, Any]:
    return steps.database(get_settings(), dry_run)


@task(name="clear-stale-locks", retries=2, retry_delay_seconds=1)
def stale_locks(dry_run: bool = False) -> dict[str, Any]:
    return steps.stale_locks(get_settings(), dry_run)


@task(name="reset-failed-tasks", retries=2, retry_delay_seconds=1)
def failed_tasks(dry_run: bool = False) -> dict[str, Any]:
    return steps.failed_tasks(get_settings(), dry_run)


@task(name="check-health")
def health(dry_run: bool = False) -> dict[str, Any]:
    return steps.health(get_settings(), dry_run)


@task(name="notify-recovery", retries=2, retry_delay_seconds=2)
def notify(procedure: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    return steps.notify(get_settings(), procedure, reports)
