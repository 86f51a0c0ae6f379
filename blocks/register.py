"""Create ORCH's notification blocks from configuration, so automations and operators in the Prefect UI
use the same destinations as ORCH itself. Idempotent: re-running overwrites with current config."""

from __future__ import annotations

from orch.config.schema import Settings
from orch.notify import EMAIL_BLOCK, SLACK_BLOCK, WEBHOOK_BLOCK, notification_blocks

# The names live with orch.notify, which sends through the same blocks; they are this module's API too
# (deployments.automations, the tests), since registering the blocks is what this module is for.
__all__ = ["EMAIL_BLOCK", "SLACK_BLOCK", "WEBHOOK_BLOCK", "notification_blocks", "register_blocks"]


def register_blocks(settings: Settings) -> list[str]:
    """Save every block the configuration calls for; returns ``type/name`` of each one saved."""
    saved: list[str] = []
    for name, block in notification_blocks(settings).items():
        block.save(name, overwrite=True)
        saved.append(f"{block.get_block_type_slug()}/{name}")
    return saved
