"""The ``notifications`` section: where alerts and failures are sent (Slack, e-mail, an Alertmanager-format
webhook); registered as Prefect blocks."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from orch.config.sections.base import Section


class SlackSettings(Section):
    """Slack, through an incoming webhook."""

    webhook_url: SecretStr | None = Field(default=None, description="The incoming webhook's URL "
                                          "(SLACK_WEBHOOK_URL); unset: no Slack messages.")
    channel: str = Field(default="#orch-alerts", description="Channel to post to (webhooks may ignore it).")
    username: str = Field(default="ORCH-Next", description="Display name of the poster.")


class EmailSettings(Section):
    """E-mail over SMTP: STARTTLS when the server offers it, implicit TLS on port 465."""

    smtp_server: str | None = Field(default=None, description="SMTP host (SMTP_SERVER); with to_addresses "
                                    "unset or empty, no e-mail is sent.")
    smtp_port: int = Field(default=587, gt=0, lt=65536, description="SMTP_PORT: 587 for STARTTLS, 465 for "
                           "implicit TLS, 25 plain.")
    username: str | None = Field(default=None, description="SMTP login (SMTP_USERNAME); only ever sent over "
                                 "TLS.")
    password: SecretStr | None = Field(default=None, description="SMTP password (SMTP_PASSWORD).")
    from_address: str = Field(default="orch@localhost", description="The From address.")
    to_addresses: list[str] = Field(default_factory=list, description="Recipients.")

    @field_validator("from_address")
    @classmethod
    def _from_is_address(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"must be an e-mail address, got {value!r}")
        return value

    @field_validator("to_addresses")
    @classmethod
    def _to_are_addresses(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if "@" not in address]
        if bad:
            raise ValueError(f"must be e-mail addresses, got {', '.join(map(repr, bad))}")
        return value


class WebhookNotificationSettings(Section):
    """Any Alertmanager webhook receiver, sent Alertmanager's webhook JSON (version 4)."""

    url: SecretStr | None = Field(default=None, description="Receiver of Alertmanager-format webhook JSON; "
                                  "unset: none.")
    receiver: str = Field(default="orch-next", description="The payload's `receiver` field.")
    external_url: str = Field(default="", description="The payload's `externalURL` (e.g. the Prefect UI).")


class NotificationSettings(Section):
    """Where alerts and failed flow runs are sent."""

    slack: SlackSettings = Field(default_factory=SlackSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    webhook: WebhookNotificationSettings = Field(default_factory=WebhookNotificationSettings)
    mention_on_critical: bool = Field(default=True, description="Prefix critical Slack messages with "
                                      "<!channel>.")
