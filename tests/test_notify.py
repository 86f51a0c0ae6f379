"""Notifications through ORCH's Prefect blocks, to real receivers on loopback (HTTP and aiosmtpd)."""

from __future__ import annotations

from pathlib import Path

import pytest
from receivers import http_receiver, smtp_receiver
from support import free_port

from blocks.register import EMAIL_BLOCK, SLACK_BLOCK, WEBHOOK_BLOCK, register_blocks
from orch.config.loader import load_settings
from orch.config.schema import Settings
from orch.notify import send_notification


@pytest.fixture(autouse=True)
def _prefect_configured(prefect_server: str) -> None:
    """The blocks import Prefect, whose settings are read once: the session's server must be set first."""


def configured(*, slack: str | None = None, smtp_port: int | None = None, webhook: str | None = None,
               **extra: str) -> Settings:
    environ = {"ORCH_HOME": "."}
    if slack:
        environ["SLACK_WEBHOOK_URL"] = slack
    if smtp_port:
        environ |= {"SMTP_SERVER": "127.0.0.1", "SMTP_PORT": str(smtp_port),
                    "ORCH_NOTIFICATIONS__EMAIL__TO_ADDRESSES": "[ops@example.com, oncall@example.com]",
                    "ORCH_NOTIFICATIONS__EMAIL__FROM_ADDRESS": "orch@example.com"}
    if webhook:
        environ["ORCH_NOTIFICATIONS__WEBHOOK__URL"] = webhook
    return load_settings(environ={**environ, **extra}, generate_secrets=False)


def test_one_message_reaches_slack_email_and_webhook() -> None:
    with http_receiver() as slack, http_receiver() as hook, smtp_receiver() as smtp:
        settings = configured(slack=slack.url, smtp_port=smtp.port, webhook=hook.url)
        sent = send_notification(settings, "cpu_percent firing on web01", "CPU 93.0 % > 80 % for 120 s",
                                 "warning", labels={"alertname": "cpu_percent", "target": "web01"})
        assert sorted(sent) == sorted([SLACK_BLOCK, EMAIL_BLOCK, WEBHOOK_BLOCK])

        (message,) = slack.json_bodies()
        assert message == {"text": "*[warning] cpu_percent firing on web01*\nCPU 93.0 % > 80 % for 120 s",
                           "channel": "#orch-alerts", "username": "ORCH-Next"}
        (mail,) = smtp.messages
        assert mail["Subject"] == "[warning] cpu_percent firing on web01"
        assert mail["To"] == "ops@example.com, oncall@example.com" and mail["From"] == "orch@example.com"
        assert "CPU 93.0 % > 80 % for 120 s" in mail.get_payload()
        (payload,) = hook.json_bodies()
        assert payload["version"] == "4" and payload["status"] == "firing" and payload["receiver"] == "orch-next"
        (alert,) = payload["alerts"]
        assert alert["labels"] == {"alertname": "cpu_percent", "severity": "warning", "target": "web01"}
        assert alert["annotations"]["description"] == "CPU 93.0 % > 80 % for 120 s"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z" and len(alert["fingerprint"]) == 16


def test_critical_mentions_the_channel_and_resolved_ends_the_alert() -> None:
    with http_receiver() as slack, http_receiver() as hook:
        settings = configured(slack=slack.url, webhook=hook.url)
        send_notification(settings, "target api down", "health check failed", "critical")
        send_notification(settings, "target api recovered", "healthy again", "info", resolved=True)
        assert slack.json_bodies()[0]["text"].startswith("<!channel> *[critical] target api down*")
        assert not slack.json_bodies()[1]["text"].startswith("<!channel>")
        resolved = hook.json_bodies()[1]
        assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        settings.notifications.mention_on_critical = False
        send_notification(settings, "target api down", "again", "critical")
        assert slack.json_bodies()[2]["text"].startswith("*[critical]")


def test_a_receiver_that_is_down_or_failing_never_raises_and_is_not_reported_as_used() -> None:
    with http_receiver(status=500) as failing, smtp_receiver() as smtp:
        settings = configured(slack=failing.url, smtp_port=smtp.port,
                              ORCH_NOTIFICATIONS__WEBHOOK__URL=f"http://127.0.0.1:{free_port()}/nobody")
        assert send_notification(settings, "backup failed", "disk full", "critical") == [EMAIL_BLOCK]
        assert len(failing.requests) == 1 and len(smtp.messages) == 1
    assert send_notification(configured(), "nothing configured", "body") == []
    with pytest.raises(ValueError, match="severity"):
        send_notification(configured(), "x", "y", "urgent")


def test_smtp_upgrades_with_starttls_and_logs_in_only_over_tls(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_receiver(tls_dir=tmp_path) as smtp:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "smtp-cert.pem"))  # trust the test's own CA
        settings = configured(smtp_port=smtp.port, SMTP_USERNAME="orch", SMTP_PASSWORD="smtp-pass-0123456789")
        assert send_notification(settings, "restore finished", "database restored") == [EMAIL_BLOCK]
        assert smtp.tls_sessions == [True] and smtp.logins == [("orch", "smtp-pass-0123456789")]
    with smtp_receiver() as plain:  # no STARTTLS offered: the password must not be sent in clear
        settings = configured(smtp_port=plain.port, SMTP_USERNAME="orch", SMTP_PASSWORD="smtp-pass-0123456789")
        assert send_notification(settings, "restore finished", "database restored") == []
        assert plain.messages == []


def test_maintenance_mode_is_said_in_every_message() -> None:
    with http_receiver() as slack:
        send_notification(configured(slack=slack.url, MAINTENANCE_MODE="true"), "target api down", "x", "critical")
        assert "MAINTENANCE MODE is on: self-healing is paused." in slack.json_bodies()[0]["text"]


def test_blocks_are_registered_and_loadable_from_the_prefect_server(prefect_server: str) -> None:
    from blocks.notifications import (
        OrchAlertmanagerWebhook,
        OrchSlackWebhook,
        OrchSmtpEmail,
    )

    settings = configured(slack="http://127.0.0.1:9/slack", smtp_port=2525, webhook="http://127.0.0.1:9/am")
    assert sorted(register_blocks(settings)) == sorted([
        f"orch-slack-webhook/{SLACK_BLOCK}", f"orch-smtp-email/{EMAIL_BLOCK}",
        f"orch-alertmanager-webhook/{WEBHOOK_BLOCK}"])
    assert OrchSlackWebhook.load(SLACK_BLOCK).channel == "#orch-alerts"
    assert OrchSmtpEmail.load(EMAIL_BLOCK).to_addresses == ["ops@example.com", "oncall@example.com"]
    assert OrchAlertmanagerWebhook.load(WEBHOOK_BLOCK).url.get_secret_value() == "http://127.0.0.1:9/am"
