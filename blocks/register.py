"""Create ORCH's notification blocks from configuration, so automations and operators in the Prefect UI
use the same destinations as ORCH itself. Idempotent: re-running overwrites with current config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orch.config.schema import Settings

if TYPE_CHECKING:
    from prefect.blocks.abstract import NotificationBlock

SLACK_BLOCK = "orch-slack"
EMAIL_BLOCK = "orch-email"
WEBHOOK_BLOCK = "orch-webhook"


def notification_blocks(settings: Settings) -> dict[str, NotificationBlock]:
    """The notification blocks the configuration calls for, by block name (unsaved).

    ``orch.notify`` sends through these same objects built from the same settings rather than loading
    them from the Prefect server: a monitoring system must still page when Prefect is the thing down.
    """
    from blocks.notifications import (
        OrchAlertmanagerWebhook,
        OrchSlackWebhook,
        OrchSmtpEmail,
    )

    notifications = settings.notifications
    blocks: dict[str, NotificationBlock] = {}
    slack = notifications.slack
    if slack.webhook_url is not None:
        blocks[SLACK_BLOCK] = OrchSlackWebhook(url=slack.webhook_url, channel=slack.channel,
                                               username=slack.username,
                                               mention_on_critical=notifications.mention_on_critical)
    email = notifications.email
    if email.smtp_server and email.to_addresses:
        blocks[EMAIL_BLOCK] = OrchSmtpEmail(smtp_server=email.smtp_server, smtp_port=email.smtp_port,
                                            username=email.username, password=email.password,
                                            from_address=email.from_address, to_addresses=email.to_addresses)
    webhook = notifications.webhook
    if webhook.url is not None:
        blocks[WEBHOOK_BLOCK] = OrchAlertmanagerWebhook(url=webhook.url, receiver=webhook.receiver,
                                                        external_url=webhook.external_url)
    return blocks


def register_blocks(settings: Settings) -> list[str]:
    """Save every block the configuration calls for; returns ``type/name`` of each one saved."""
    saved: list[str] = []
    for name, block in notification_blocks(settings).items():
        block.save(name, overwrite=True)
        saved.append(f"{block.get_block_type_slug()}/{name}")
    return saved
