"""ORCH's Prefect notification blocks: Slack, e-mail over SMTP and an Alertmanager-format webhook.

Why custom blocks rather than Prefect's built-ins: Prefect's ``SlackWebhook`` goes through apprise, which
only accepts ``hooks.slack.com`` addresses (no proxy, relay or test receiver), Prefect ships no SMTP
notification block (prefect-email's block holds credentials and cannot be an automation's target), and
no built-in block speaks Alertmanager's webhook format. These are ``NotificationBlock`` subclasses, so an
automation's "send a notification" action can use them like any other.

The Prefect server must be able to import this module to run such an action: ``pyproject.toml`` names it
under the ``prefect.collections`` entry point, which Prefect imports in every process (server included).
So this module imports nothing but the standard library, httpx, Prefect's block base classes and the names
it shares with ``orch.notify`` (which imports nothing heavy either): ORCH finds these classes through that same
entry point, in Prefect's block registry by slug, so the domain core never imports this package.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any, ClassVar

import httpx
from prefect.blocks.abstract import NotificationBlock, NotificationError
from pydantic import Field, SecretStr

from orch.notify import EMAIL_TYPE, SEVERITIES, SLACK_TYPE, WEBHOOK_TYPE

TIMEOUT_SECONDS = 10.0


def severity_of(subject: str | None, severity: str | None) -> str:
    """The message's severity: given explicitly by ORCH, else read from a ``[critical]`` subject prefix.

    An automation's message comes from the Prefect server with only a subject and a body, so ORCH's
    automations put the severity at the start of the subject.
    """
    if severity:
        return severity.lower()
    head = (subject or "").strip().lower()
    for name in SEVERITIES:
        if head.startswith(f"[{name}]"):
            return name
    return "info"


class _OrchNotificationBlock(NotificationBlock):
    """Shared failure handling: raise inside ``raise_on_failure()`` (how callers learn), else log."""

    _logo_url: ClassVar[str] = "https://docs.prefect.io/img/favicon.ico"  # type: ignore[assignment]

    def _failed(self, exc: Exception) -> None:
        message = f"{self._block_type_name} notification failed: {type(exc).__name__}: {exc}"
        if self._raise_on_failure:
            raise NotificationError(log=message) from exc
        self.logger.warning(message)


class OrchSlackWebhook(_OrchNotificationBlock):
    """Posts to a Slack incoming webhook (or anything that accepts Slack's webhook JSON)."""

    _block_type_name = "ORCH Slack Webhook"
    _block_type_slug = SLACK_TYPE
    _description = "Slack incoming webhook with channel, username and a channel mention on critical alerts."

    url: SecretStr = Field(description="The incoming webhook URL.")
    channel: str | None = Field(default=None, description="Channel to post to (webhooks may ignore it).")
    username: str | None = Field(default=None, description="Display name of the poster.")
    mention_on_critical: bool = Field(default=True, description="Prefix critical messages with <!channel>.")

    def payload(self, body: str, subject: str | None, severity: str) -> dict[str, Any]:
        """Slack's webhook JSON: one ``text`` (the subject in bold, then the body)."""
        text = f"*{subject}*\n{body}" if subject else body
        if severity == "critical" and self.mention_on_critical:
            text = f"<!channel> {text}"
        payload: dict[str, Any] = {"text": text}
        if self.channel:
            payload["channel"] = self.channel
        if self.username:
            payload["username"] = self.username
        return payload

    async def notify(self, body: str, subject: str | None = None, *, severity: str | None = None,
                     labels: dict[str, str] | None = None, resolved: bool = False) -> None:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.post(self.url.get_secret_value(),
                                             json=self.payload(body, subject, severity_of(subject, severity)))
                response.raise_for_status()
        except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
            self._failed(exc)


class OrchSmtpEmail(_OrchNotificationBlock):
    """Sends e-mail through an SMTP relay, upgrading to TLS with STARTTLS whenever the server offers it."""

    _block_type_name = "ORCH SMTP Email"
    _block_type_slug = EMAIL_TYPE
    _description = "E-mail over SMTP (STARTTLS when offered, implicit TLS on port 465)."

    smtp_server: str = Field(description="Host name of the SMTP relay.")
    smtp_port: int = Field(default=587, description="587 for STARTTLS, 465 for implicit TLS, 25 plain.")
    username: str | None = Field(default=None, description="Login; only ever sent over TLS.")
    password: SecretStr | None = Field(default=None)
    from_address: str = Field(description="The From address.")
    to_addresses: list[str] = Field(description="Recipients.")

    def message(self, body: str, subject: str | None) -> EmailMessage:
        message = EmailMessage()
        first_line = body.strip().splitlines()[0][:120] if body.strip() else "ORCH-Next notification"
        message["Subject"] = subject or first_line
        message["From"] = self.from_address
        message["To"] = ", ".join(self.to_addresses)
        message.set_content(body)
        return message

    def send(self, message: EmailMessage) -> None:
        """Blocking send. Credentials never travel in clear: a server without STARTTLS gets none."""
        context = ssl.create_default_context()
        if self.smtp_port == 465:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.smtp_server, self.smtp_port, timeout=TIMEOUT_SECONDS,
                                                  context=context)
        else:
            smtp = smtplib.SMTP(self.smtp_server, self.smtp_port, timeout=TIMEOUT_SECONDS)
        with smtp:
            smtp.ehlo()
            if self.smtp_port != 465 and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            elif self.smtp_port != 465 and self.username:
                raise smtplib.SMTPNotSupportedError(
                    f"{self.smtp_server}:{self.smtp_port} does not offer STARTTLS; refusing to send credentials "
                    "in clear")
            if self.username:
                smtp.login(self.username, self.password.get_secret_value() if self.password else "")
            smtp.send_message(message)

    async def notify(self, body: str, subject: str | None = None, *, severity: str | None = None,
                     labels: dict[str, str] | None = None, resolved: bool = False) -> None:
        try:
            await asyncio.to_thread(self.send, self.message(body, subject))
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)


class OrchAlertmanagerWebhook(_OrchNotificationBlock):
    """POSTs Alertmanager's webhook JSON (version 4), so any Alertmanager webhook receiver can take ORCH alerts."""

    _block_type_name = "ORCH Alertmanager Webhook"
    _block_type_slug = WEBHOOK_TYPE
    _description = "Generic webhook whose payload follows Prometheus Alertmanager's webhook format."

    url: SecretStr = Field(description="Receiver URL (may carry a token, hence secret).")
    receiver: str = Field(default="orch-next", description="The `receiver` field of the payload.")
    external_url: str = Field(default="", description="`externalURL`: where the alerts can be seen.")

    def payload(self, body: str, subject: str | None, severity: str, labels: dict[str, str] | None,
                resolved: bool) -> dict[str, Any]:
        all_labels = {"alertname": (subject or "orch notification")[:200], "severity": severity,
                      **(labels or {})}
        status = "resolved" if resolved else "firing"
        now = datetime.datetime.now(datetime.UTC).isoformat()
        key = "{}:" + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items())) + "}"
        alert = {"status": status, "labels": all_labels,
                 "annotations": {"summary": subject or "", "description": body},
                 "startsAt": now, "endsAt": now if resolved else "0001-01-01T00:00:00Z",
                 "generatorURL": self.external_url,
                 "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16]}
        return {"version": "4", "groupKey": key, "truncatedAlerts": 0, "status": status,
                "receiver": self.receiver, "groupLabels": {"alertname": all_labels["alertname"]},
                "commonLabels": all_labels, "commonAnnotations": alert["annotations"],
                "externalURL": self.external_url, "alerts": [alert]}

    async def notify(self, body: str, subject: str | None = None, *, severity: str | None = None,
                     labels: dict[str, str] | None = None, resolved: bool = False) -> None:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
                response = await client.post(self.url.get_secret_value(), json=self.payload(
                    body, subject, severity_of(subject, severity), labels, resolved))
                response.raise_for_status()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
