"""Send a message to every configured notification destination (Slack, e-mail, Alertmanager webhook).

The one call every ORCH component uses to tell a human something: alerts, healing, backups, scans.
It sends through ORCH's Prefect notification blocks (the ones ``blocks/register.py`` saves for
automations), built from this process's settings, and never raises because a receiver is down: the
caller's job (a backup, a heal) must not fail because Slack did; the failure is logged instead.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from orch.logging_config import get_logger

if TYPE_CHECKING:
    from orch.config.schema import Settings

log = get_logger(__name__)
SEVERITIES = ("info", "warning", "critical")


def send_notification(settings: Settings, title: str, body: str, severity: str = "info", *,
                      labels: dict[str, str] | None = None, resolved: bool = False) -> list[str]:
    """Send ``title``/``body`` everywhere configured; returns the names of the blocks that delivered it.

    ``labels`` (e.g. ``alertname``, ``target``) go into the Alertmanager payload; ``resolved`` marks the
    message as the end of an alert there. In maintenance mode every message says so, because a human
    reading an alert must know that self-healing is paused.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
    from blocks.register import notification_blocks
    from orch.maintenance_mode import is_on

    blocks = notification_blocks(settings)
    if not blocks:
        return []
    if is_on(settings):
        body = f"{body}\n\nMAINTENANCE MODE is on: self-healing is paused."
    subject = f"[{severity}] {title}"
    return asyncio.run(_send_all(blocks, subject, body, severity, labels or {}, resolved))


async def _send_all(blocks: dict, subject: str, body: str, severity: str, labels: dict[str, str],
                    resolved: bool) -> list[str]:
    """Every destination at once, so one slow receiver does not delay the others."""
    async def one(name: str, block: object) -> str | None:
        try:
            with block.raise_on_failure():  # type: ignore[attr-defined]
                await block.notify(body, subject, severity=severity, labels=labels,  # type: ignore[attr-defined]
                                   resolved=resolved)
        except Exception as exc:  # noqa: BLE001 - a receiver that is down must not fail the caller
            log.warning("notification via %s failed: %s", name, getattr(exc, "log", exc),
                        extra={"event_type": "notification.failed", "block": name})
            return None
        log.info("notification sent via %s", name, extra={"event_type": "notification.sent", "block": name,
                                                           "severity": severity})
        return name

    results = await asyncio.gather(*(one(name, block) for name, block in blocks.items()))
    return [name for name in results if name]
