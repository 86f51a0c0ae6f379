"""Send a message to every configured notification destination (Slack, e-mail, Alertmanager webhook).

The one call every ORCH component uses to tell a human something: alerts, healing, backups, scans.
It sends through ORCH's Prefect notification blocks (the ones ``blocks/register.py`` saves for
automations), built from this process's settings, and never raises because a receiver is down: the
caller's job (a backup, a heal) must not fail because Slack did; the failure is logged instead.

The block classes are in ``blocks/notifications.py``, which Prefect imports through this package's
``prefect.collections`` entry point (pyproject.toml). ORCH finds them where the Prefect server does, in
Prefect's block registry by their type slug, so the domain core never imports the blocks package.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from orch.logging_config import get_logger

if TYPE_CHECKING:
    from prefect.blocks.abstract import NotificationBlock

    from orch.config.schema import Settings

log = get_logger(__name__)
SEVERITIES = ("info", "warning", "critical")  # also what blocks/notifications.py reads from a subject prefix

# The blocks' names on the Prefect server, and their block types' slugs (blocks/notifications.py declares them).
SLACK_BLOCK, EMAIL_BLOCK, WEBHOOK_BLOCK = "orch-slack", "orch-email", "orch-webhook"
SLACK_TYPE, EMAIL_TYPE, WEBHOOK_TYPE = "orch-slack-webhook", "orch-smtp-email", "orch-alertmanager-webhook"


def notification_blocks(settings: Settings) -> dict[str, NotificationBlock]:
    """The notification blocks the configuration calls for, by block name (unsaved).

    :func:`send_notification` sends through these objects built from the settings rather than loading them
    from the Prefect server: a monitoring system must still page when Prefect is the thing down. The same
    objects are what ``blocks/register.py`` saves for automations.
    """
    notifications = settings.notifications
    blocks: dict[str, NotificationBlock] = {}
    slack = notifications.slack
    if slack.webhook_url is not None:
        blocks[SLACK_BLOCK] = _block(SLACK_TYPE, url=slack.webhook_url, channel=slack.channel,
                                     username=slack.username, mention_on_critical=notifications.mention_on_critical)
    email = notifications.email
    if email.smtp_server and email.to_addresses:
        blocks[EMAIL_BLOCK] = _block(EMAIL_TYPE, smtp_server=email.smtp_server, smtp_port=email.smtp_port,
                                     username=email.username, password=email.password,
                                     from_address=email.from_address, to_addresses=email.to_addresses)
    webhook = notifications.webhook
    if webhook.url is not None:
        blocks[WEBHOOK_BLOCK] = _block(WEBHOOK_TYPE, url=webhook.url, receiver=webhook.receiver,
                                       external_url=webhook.external_url)
    return blocks


def _block(slug: str, **fields: Any) -> NotificationBlock:
    """A block of ORCH's type ``slug``, from Prefect's registry (it imports the collection on first use)."""
    from prefect.blocks.core import Block

    return Block.get_block_class_from_key(slug)(**fields)  # type: ignore[return-value]


def send_notification(settings: Settings, title: str, body: str, severity: str = "info", *,
                      labels: dict[str, str] | None = None, resolved: bool = False) -> list[str]:
    """Send ``title``/``body`` everywhere configured; returns the names of the blocks that delivered it.

    ``labels`` (e.g. ``alertname``, ``target``) go into the Alertmanager payload; ``resolved`` marks the
    message as the end of an alert there. In maintenance mode every message says so, because a human
    reading an alert must know that self-healing is paused.
    """
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
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
