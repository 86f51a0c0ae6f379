"""What a human reads: one message per target per sweep, saying what fired, where, the value against the
threshold, what healing did, and where to look (the Prefect run)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from orch.config.schema import Settings
from orch.monitoring.alerts import Notice

_VERBS = {"firing": "FIRING", "reminder": "still firing", "resolved": "resolved", "flapping": "FLAPPING"}
_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    severity: str
    labels: dict[str, str]
    resolved: bool


def prefect_ui_url(settings: Settings) -> str:
    """The Prefect UI's base address, derived from the API address ORCH uses."""
    api = settings.prefect.resolved_api_url().rstrip("/")
    return api.removesuffix("/api")


def flow_run_url(settings: Settings, flow_run_id: str | None) -> str | None:
    return f"{prefect_ui_url(settings)}/runs/flow-run/{flow_run_id}" if flow_run_id else None


def alert_line(kind: str, alert: dict) -> str:
    value = "" if alert.get("value") is None else f" (value {alert['value']:g}, threshold {alert['threshold']:g})"
    return f"{alert['alert_name']} {_VERBS[kind]} on {alert['target']}: {alert['summary']}{value}"


def group_by_target(notices: list[Notice], *, run_url: str | None = None, note: str = "") -> list[Message]:
    """One message per target, so a host with three alerts pages once, not three times.

    ``note`` is added to messages about alerts that would have been healed (e.g. "healing is off").
    """
    grouped: dict[str, list[Notice]] = defaultdict(list)
    for notice in notices:
        grouped[notice.alert["target"]].append(notice)
    messages = []
    for target, items in grouped.items():
        severity = max((n.alert["severity"] if n.kind != "resolved" else "info" for n in items), key=_RANK.get)
        if any(n.kind == "flapping" for n in items) and severity == "critical":
            severity = "warning"  # flapping is held on purpose: tell, do not page
        names = sorted({n.alert["alert_name"] for n in items})
        kinds = sorted({_VERBS[n.kind] for n in items})
        title = f"{', '.join(names)} {'/'.join(kinds)} on {target}"
        lines = [alert_line(n.kind, n.alert) for n in items]
        if note and any(n.heal for n in items):
            lines.append(note)
        if run_url:
            lines.append(f"Run: {run_url}")
        messages.append(Message(title, "\n".join(lines), severity,
                                {"alertname": names[0], "target": target, "alerts": ",".join(names)},
                                all(n.kind == "resolved" for n in items)))
    return messages
