"""Is monitoring itself working? The API's ``/health`` asks this (component ``monitor``).

A sweep that stopped running is silent, which looks exactly like "all is well"; so the age of the newest
stored sample is the check: older than three intervals (plus slack for a slow run) is ``degraded``;
none at all in the last day is ``unknown`` (a stack that just started has not swept yet).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from orch.config.schema import Settings
from orch.storage.engine import session_scope
from orch.storage.models import Alert, MonitorSample
from orch.storage.types import utcnow

SLACK_SECONDS = 30


def sweep_status(settings: Settings) -> dict[str, Any]:
    """``{"status": "ok"|"degraded"|"unknown", "detail": ...}``: when the last sweep stored samples, and what
    fires. ``unknown`` when there is no sweep at all in the last day (e.g. the stack started a moment ago)."""
    now = utcnow()
    with session_scope(settings.database) as session:
        last = session.scalar(select(func.max(MonitorSample.timestamp)).where(
            MonitorSample.timestamp > now - timedelta(days=1)))
        firing = session.scalar(select(func.count()).select_from(Alert).where(Alert.state == "firing")) or 0
    if last is None:  # a stack that just started has not swept yet: not a fault, but nothing to vouch for
        return {"status": "unknown", "detail": "no monitoring sweep in the last day (is the monitor-sweep "
                                               "deployment scheduled and a worker running?)"}
    age = (now - last).total_seconds()
    limit = 3 * settings.monitoring.interval + SLACK_SECONDS
    status = "ok" if age <= limit else "degraded"
    return {"status": status, "detail": f"last sweep {age:.0f} s ago (limit {limit} s); {firing} alert(s) firing"}
