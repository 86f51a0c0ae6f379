"""Blocks ORCH registers on the Prefect server from its configuration."""

from __future__ import annotations

import pytest

from blocks.register import SLACK_BLOCK, register_blocks
from orch.config.loader import load_settings


def test_nothing_configured_registers_nothing(prefect_server: str) -> None:
    assert register_blocks(load_settings(generate_secrets=False)) == []


def test_slack_block_saved_and_overwritten(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.notifications import OrchSlackWebhook

    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/first0000000")
    assert register_blocks(load_settings(generate_secrets=False)) == [f"orch-slack-webhook/{SLACK_BLOCK}"]
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/second000000")
    register_blocks(load_settings(generate_secrets=False))
    block = OrchSlackWebhook.load(SLACK_BLOCK)
    assert block.url.get_secret_value().endswith("/second000000")
    assert "second000000" not in repr(block)
