"""Telling a human: one retried task around ``orch.notify.send_notification`` (which never raises for a
receiver that is down, so a retry here only covers loading the blocks)."""

from __future__ import annotations

from prefect import task

from orch.config.runtime import get_settings
from orch.notify import send_notification


@task(name="notify", retries=2, retry_delay_seconds=2)
def notify(title: str, body: str, severity: str = "info") -> list[str]:
    return send_notification(get_settings(), title, body, severity)


def notify_failure(procedure: str, exc: BaseException) -> None:
    """A failed job says so, with its one-line reason, before the flow run ends Failed."""
    notify(f"ORCH-Next {procedure} failed", f"{type(exc).__name__}: {exc}", "critical")
