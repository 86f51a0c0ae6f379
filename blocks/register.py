"""Create ORCH's notification blocks from configuration, so automations and operators in the Prefect UI
use the same Slack destination as ORCH itself. Idempotent: re-running overwrites with current config."""

from __future__ import annotations

from orch.config.schema import Settings

SLACK_BLOCK = "orch-slack"


def register_blocks(settings: Settings) -> list[str]:
    """Save every block the configuration calls for; returns ``type/name`` of each one saved."""
    saved: list[str] = []
    slack = settings.notifications.slack
    if slack.webhook_url is not None:
        from prefect.blocks.notifications import SlackWebhook

        SlackWebhook(url=slack.webhook_url).save(SLACK_BLOCK, overwrite=True)
        saved.append(f"slack-webhook/{SLACK_BLOCK}")
    return saved
