"""Alert states: pending -> firing -> resolved, de-duplicated, reminded, held as flapping, silenced.

One row per (alert, target) holds the state; every change is also an ``alert_events`` row (the API's
SSE stream reads those by id). :func:`apply` turns one sweep's observations into state changes and
returns the :class:`Notice` list of what must be said or healed, so the flow decides how to say it.

Flapping: every flip of the underlying condition (bad/good) is remembered for ``flap_window``; with
``flap_threshold`` flips in the window the alert is held as ``flapping``: one notice, no healing and no
further paging until the condition stays put long enough for the count to fall.

Heals: an alert's life includes its heals. A heal notice marks the alert ``requested``; the self-heal run
records what it came to (:func:`record_heal`). While the alert stays firing, it asks for healing again
when a sample taken after a heal that ended healthy is bad again (the target died again before any sweep
saw it well), or when a heal that was skipped (a silence, a maintenance window, maintenance mode) can now
act. A heal that failed or met the circuit breaker is not asked again: a human was paged. A heal run that ended
without acting (never started, cancelled), or was never created, is asked for again (:func:`lost_heals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from orch import maintenance_mode
from orch.config.schema import Settings
from orch.monitoring import silences
from orch.monitoring.rules import Observation
from orch.prefect_api import flow_runs_by_idempotency_key
from orch.storage.engine import (
    DatabaseCorrupt,
    corruption_record,
    is_corruption_error,
    known_corruption,
    note_corruption_notified,
    serialise,
    session_scope,
)
from orch.storage.models import Alert, AlertEvent
from orch.storage.types import utcnow

STATES = ("pending", "firing", "flapping", "resolved", "inactive")
ACTIVE_STATES = ("pending", "firing", "flapping")
HEAL_AGAIN_AFTER = ("healed", "skipped", "unrequested")  # outcomes after which a still-firing alert heals again
DATABASE_CORRUPT = "database_corrupt"
APPLY_TURN_KEY = 0x0_A1_E7_55  # serialise() key of alert application (the queue's claims use 0x07C4D15)


@dataclass(frozen=True)
class Notice:
    """Something to tell a human (and, for ``firing`` with ``heal``, to heal)."""

    kind: str  # firing, reminder, resolved, flapping
    alert: dict[str, Any]
    heal: bool = False


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def alert_view(row: Alert) -> dict[str, Any]:
    return {"id": row.id, "alert_name": row.alert_name, "target": row.target, "state": row.state,
            "severity": row.severity, "summary": row.summary, "value": row.value, "threshold": row.threshold,
            "pending_since": _iso(row.pending_since), "fired_at": _iso(row.fired_at),
            "resolved_at": _iso(row.resolved_at), "last_notified_at": _iso(row.last_notified_at),
            "heal_state": row.heal_state, "heal_at": _iso(row.heal_at), "heals": row.heals or 0}


def _flips(row: Alert, active: bool, now: datetime, window: int) -> int:
    """Record a flip of the condition (kept as ``bad@time``/``good@time``); return the flips within the window.

    The newest entry is kept even when it is older than the window: it says what the condition is now.
    """
    history = list(row.transitions or [])
    current = history[-1].split("@", 1)[0] if history else "good"
    observed = "bad" if active else "good"
    if observed != current:
        history.append(f"{observed}@{now.isoformat()}")
    since = now - timedelta(seconds=window)
    recent = [entry for entry in history if datetime.fromisoformat(entry.split("@", 1)[1]) > since]
    row.transitions = recent or history[-1:]
    return len(recent)


def apply(settings: Settings, observations: list[Observation], now: datetime | None = None) -> list[Notice]:
    """Move every alert to what this sweep observed; return what must be notified or healed."""
    now = now or utcnow()
    alerting = settings.monitoring.alerting
    quiet = silences.active(settings, now)
    notices: list[Notice] = []
    with session_scope(settings.database, write_lock=True) as session:
        serialise(session, APPLY_TURN_KEY)  # overlapping sweeps: the second reads what the first made
        rows = {(row.alert_name, row.target): row for row in session.scalars(select(Alert).with_for_update())}
        for obs in observations:
            row = rows.get((obs.alert_name, obs.target))
            if row is None:
                if obs.state == "ok":
                    continue  # nothing ever went wrong here: no row, no event
                row = Alert(alert_name=obs.alert_name, target=obs.target, state="inactive", severity=obs.severity,
                            summary=obs.summary, transitions=[])
                session.add(row)
                rows[(obs.alert_name, obs.target)] = row
            before = row.state
            row.summary, row.value, row.threshold, row.severity = obs.summary, obs.value, obs.threshold, obs.severity
            flips = _flips(row, obs.state == "firing", now, alerting.flap_window)
            after = _next_state(before, obs.state, flips >= alerting.flap_threshold)
            if after != before:
                row.state = after
                if after == "pending":
                    row.pending_since = obs.since or now
                if after == "firing":
                    row.fired_at, row.last_notified_at = now, None
                    row.heal_state, row.heal_at, row.heals = None, None, 0  # a new firing: its own heals
                if after in ("resolved", "inactive"):
                    row.resolved_at = now
                session.add(AlertEvent(timestamp=now, alert_name=row.alert_name, target=row.target, state=after,
                                       severity=row.severity, summary=row.summary, value=row.value,
                                       threshold=row.threshold))
            notice = _notice(row, before, after, obs, now, alerting.repeat_interval) or \
                _heal_again(settings, row, before, after, obs)
            if notice is None:
                continue
            silenced = silences.suppressing(quiet, row.target, row.alert_name)
            if silenced is not None and notice.kind != "resolved":
                continue  # said (and healed) when the silence ends, if it still fires
            if notice.kind in ("firing", "reminder", "flapping"):
                row.last_notified_at = now
            if notice.heal:
                row.heal_state, row.heal_at, row.heals = "requested", now, (row.heals or 0) + 1
            notices.append(Notice(notice.kind, alert_view(row), notice.heal))
    return notices


def _next_state(before: str, observed: str, flapping: bool) -> str:
    if flapping and (before in ("firing", "flapping") or observed == "firing"):
        return "flapping"
    if observed == "firing":
        return "firing"
    if observed == "pending":
        return before if before in ("firing", "flapping") else "pending"
    if before in ("firing", "flapping"):
        return "resolved"
    return "inactive" if before == "pending" else before


def _notice(row: Alert, before: str, after: str, obs: Observation, now: datetime, repeat: int) -> Notice | None:
    if after == "flapping" and before != "flapping":
        return Notice("flapping", {})
    if after == "firing" and (before != "firing" or row.last_notified_at is None):
        return Notice("firing", {}, heal=obs.heal)
    if after == "firing" and row.last_notified_at and now - row.last_notified_at >= timedelta(seconds=repeat):
        return Notice("reminder", {})
    if after == "resolved" and before in ("firing", "flapping"):
        return Notice("resolved", {}) if before == "flapping" or row.last_notified_at else None
    return None


def _heal_again(settings: Settings, row: Alert, before: str, after: str, obs: Observation) -> Notice | None:
    """A firing alert whose last heal ended healthy, or was skipped, and which is still bad: heal again.

    After ``healed`` only a sample taken after the heal ended counts (the sweep stamps samples with its
    start, before any check ran), so a sweep that measured before the heal finished cannot trigger a
    second heal of a target that is well. After ``skipped`` the switches must allow healing now, or each
    sweep would start a run that only says healing is off.
    """
    if not (obs.heal and before == after == "firing" and row.heal_state in HEAL_AGAIN_AFTER):
        return None
    if row.heal_state == "healed":
        if obs.latest_at is None or row.heal_at is None or obs.latest_at <= row.heal_at:
            return None
    elif healing_stopped_by(settings):
        return None
    return Notice("firing", {}, heal=True)


def healing_stopped_by(settings: Settings) -> str | None:
    """Which switch stops healing now, or None when it may act (silences are checked separately)."""
    if not settings.features.enable_self_healing or not settings.monitoring.self_healing.enabled:
        return "self-healing is turned off (features.enable_self_healing / monitoring.self_healing.enabled)"
    if maintenance_mode.is_on(settings):
        return "maintenance mode is on: self-healing is paused"
    return None


def record_heal(session: Session, target: str, alert_name: str, outcome: str, at: datetime) -> None:
    """What a heal run came to, on the alert it was for (in the run's own transaction)."""
    row = session.scalar(select(Alert).where(Alert.alert_name == alert_name, Alert.target == target)
                         .with_for_update())
    if row is not None:
        row.heal_state, row.heal_at = outcome, at


def heal_not_requested(settings: Settings, target: str, alert_name: str, at: datetime) -> None:
    """The sweep could not create the heal run (Prefect refused or was away after the retries): the heal
    was never asked for, so it does not count, and the next sweep that still sees the alert firing asks
    again (:func:`_heal_again`). Without this, one busy moment of Prefect's left a firing target unhealed."""
    with session_scope(settings.database, write_lock=True) as session:
        row = session.scalar(select(Alert).where(Alert.alert_name == alert_name, Alert.target == target)
                             .with_for_update())
        if row is not None and row.heal_state == "requested":
            row.heal_state, row.heal_at, row.heals = "unrequested", at, max(0, (row.heals or 0) - 1)


def heal_key(alert: dict[str, Any]) -> str:
    """The idempotency key of the heal run asked for an alert's firing and heal number (:func:`alert_view`),
    so a retried request cannot heal the same firing twice and a lost run can be found again."""
    return f"heal:{alert['alert_name']}:{alert['target']}:{alert.get('fired_at')}:{alert.get('heals')}"


ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")  # Prefect state types after which a run does nothing more


@dataclass(frozen=True)
class LostHeal:
    """A heal run that ended without recording what it came to: it never acted (its worker could not
    start it, it crashed before its first step, someone cancelled it)."""

    target: str
    alert_name: str
    heals: int
    state: str
    message: str
    again: bool  # asked for again (False: as many lost as the breaker's hourly runs; a human must look)


def unmade_after(settings: Settings) -> timedelta:
    """How long a requested heal may go without its run existing before the request counts as lost: the
    sweep that asked creates it moments after asking, so two intervals (at least 30 s) mean it never will."""
    return timedelta(seconds=max(2 * settings.monitoring.interval, 30))


def lost_heals(settings: Settings, targets: list[str], now: datetime) -> list[LostHeal]:
    """Firing alerts of ``targets`` still ``requested`` whose heal run will never act. Without this, one
    lost run left a firing target unhealed for good: CI saw both kinds below.

    - **Ended** (Prefect shows the run Completed, Failed, Crashed or Cancelled before it recorded an
      outcome: its worker could not start it, a busy Prefect server answering 503). The alert goes back
      to ``unrequested`` with its heal number kept, so the next request is a new run, up to
      ``max_runs_per_hour`` per firing; past that it is ``lost``, not asked again, and the alert's
      reminders keep a human told.
    - **Never made** (no run under the key :func:`unmade_after` after the request: the sweep that asked
      died or hung before creating it). The alert goes back as :func:`heal_not_requested` leaves it, its
      heal number given back, so the next request reuses the key and a late run of the stuck sweep and
      the new request are one run, not two.

    The alert moves only if it is still at that heal and ``requested``: a run that recorded its outcome
    between the two reads keeps it."""
    if not targets:
        return []
    with session_scope(settings.database) as session:
        rows = session.scalars(select(Alert).where(Alert.state == "firing", Alert.heal_state == "requested",
                                                   Alert.target.in_(targets))).all()
        asked = {heal_key(alert_view(row)): (row.alert_name, row.target, row.heals or 0, row.heal_at)
                 for row in rows}
    runs = flow_runs_by_idempotency_key(settings.prefect, list(asked))
    lost = []
    limit = settings.monitoring.self_healing.max_runs_per_hour
    for key, (alert_name, target, heals, asked_at) in asked.items():
        state, message = runs.get(key, (None, ""))
        if key in runs and state in ENDED:
            again, moved_to, given_back = heals < limit, "unrequested" if heals < limit else "lost", 0
        elif key not in runs and asked_at is not None and now - asked_at >= unmade_after(settings):
            again, moved_to, given_back = True, "unrequested", 1
            waited = unmade_after(settings).total_seconds()
            state, message = "NOT CREATED", f"no run was created in the {waited:g} s after the request"
        else:
            continue
        with session_scope(settings.database, write_lock=True) as session:
            moved = session.execute(update(Alert).where(
                Alert.alert_name == alert_name, Alert.target == target, Alert.heal_state == "requested",
                Alert.heals == heals).values(heal_state=moved_to, heal_at=now,
                                             heals=max(0, heals - given_back))).rowcount
        if moved:
            lost.append(LostHeal(target, alert_name, heals, str(state), message, again))
    return lost


def heals_of(settings: Settings, target: str, alert_name: str) -> int:
    """How many heals the alert's current firing has asked for (1 for the first)."""
    with session_scope(settings.database) as session:
        return int(session.scalar(select(Alert.heals).where(Alert.alert_name == alert_name,
                                                           Alert.target == target)) or 0)


def list_alerts(settings: Settings, *, state: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The stored alerts, newest first; while damage is recorded, its critical alert first, from the marker.

    From the marker because the alert's own row would live in the damaged file: the sweep that should
    store it fails there, and the table may not even be readable."""
    corrupt = corruption_alert(settings) if state in (None, "firing") else None
    try:
        with session_scope(settings.database) as session:
            query = select(Alert).order_by(Alert.updated_at.desc()).limit(limit)
            if state:
                query = query.where(Alert.state == state)
            stored = [alert_view(row) for row in session.scalars(query)]
    except Exception as exc:
        if corrupt is None or not (isinstance(exc, DatabaseCorrupt) or is_corruption_error(exc)):
            raise
        return [corrupt]
    if corrupt is None:
        return stored
    return [corrupt, *[alert for alert in stored if alert["alert_name"] != DATABASE_CORRUPT]][:limit]


def corruption_alert(settings: Settings) -> dict[str, Any] | None:
    """The firing ``database_corrupt`` alert of recorded damage (:func:`orch.storage.engine.corruption_record`),
    shaped as :func:`alert_view` shapes a stored one; None when no damage is recorded."""
    url = settings.database.url or ""
    found = corruption_record(url)
    if found is None:
        return None
    return {"id": None, "alert_name": DATABASE_CORRUPT, "target": "host", "state": "firing", "severity": "critical",
            "summary": str(DatabaseCorrupt(url, known_corruption(url) or "damage recorded")), "value": 1.0,
            "threshold": 0.0, "pending_since": None, "fired_at": found.get("at"), "resolved_at": None,
            "last_notified_at": found.get("notified_at"), "heal_state": None, "heal_at": None, "heals": 0}


def corruption_notice(settings: Settings, now: datetime | None = None) -> Notice | None:
    """The notice of recorded damage when it was never sent, or last sent ``repeat_interval`` ago; records
    the sending in the marker. For a sweep that cannot evaluate (or store) in the damaged file."""
    now = now or utcnow()
    found = corruption_record(settings.database.url or "")
    if found is None:
        return None
    last = _parse(found.get("notified_at"))
    if last is not None and now - last < timedelta(seconds=settings.monitoring.alerting.repeat_interval):
        return None
    note_corruption_notified(settings.database.url or "", now)
    alert = corruption_alert(settings)
    return None if alert is None else Notice("firing" if last is None else "reminder", alert)


def _parse(value: Any) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed


def events_after(settings: Settings, after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    """Alert state changes with ``id`` above ``after_id``, oldest first (for streams and pollers)."""
    with session_scope(settings.database) as session:
        rows = session.scalars(select(AlertEvent).where(AlertEvent.id > after_id).order_by(AlertEvent.id)
                               .limit(limit))
        return [{"id": row.id, "timestamp": row.timestamp.isoformat(), "alert_name": row.alert_name,
                 "target": row.target, "state": row.state, "severity": row.severity, "summary": row.summary,
                 "value": row.value, "threshold": row.threshold} for row in rows]
