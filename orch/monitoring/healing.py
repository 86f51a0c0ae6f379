"""Self-healing policy: whether a heal may run now, the circuit breaker, and the record of each run.

The flow (``flows/self_heal.py``) follows the steps; this module decides and records, so every decision
is the same whichever process makes it and every step is in the database and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from orch.audit import record_audit
from orch.config.schema import Settings
from orch.monitoring import alerts, silences
from orch.storage.engine import session_scope
from orch.storage.models import HealRun
from orch.storage.types import utcnow

ACTOR = "system:self-heal"
OUTCOMES = ("running", "healed", "failed", "circuit_open", "dry_run", "skipped")
COUNTED = ("running", "healed", "failed")  # what the circuit breaker counts: runs that acted


@dataclass(frozen=True)
class Gate:
    """Whether healing may act on a target now; ``reason`` says why not (for the run, audit and message)."""

    allowed: bool
    outcome: str = "running"
    reason: str = ""


def gate(settings: Settings, target: str, alert_name: str) -> Gate:
    """Switches, maintenance mode, silences and windows, then the circuit breaker, in that order."""
    stopped = alerts.healing_stopped_by(settings)
    if stopped:
        return Gate(False, "skipped", stopped)
    quiet = silences.suppressing(silences.active(settings), target, alert_name)
    if quiet is not None:
        return Gate(False, "skipped", f"{quiet.kind} {quiet.id} covers {target} until {quiet.ends_at.isoformat()}")
    limit = settings.monitoring.self_healing.max_runs_per_hour
    recent = runs_in_last_hour(settings, target)
    if recent >= limit:
        return Gate(False, "circuit_open", f"circuit breaker open: {recent} healing runs on {target} in the last "
                    f"hour (limit {limit}); healing stopped, a human must look")
    return Gate(True)


def runs_in_last_hour(settings: Settings, target: str) -> int:
    since = utcnow() - timedelta(hours=1)
    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(HealRun).where(
            HealRun.target == target, HealRun.started_at > since, HealRun.outcome.in_(COUNTED))) or 0)


def start_run(settings: Settings, target: str, alert_name: str, flow_run_id: str | None, outcome: str = "running",
              reason: str = "") -> int:
    """Record a run (and audit it) before it acts, so a run that crashes still counts for the breaker."""
    with session_scope(settings.database, write_lock=True) as session:
        run = HealRun(target=target, alert_name=alert_name, flow_run_id=flow_run_id, outcome=outcome,
                      steps=[{"step": "start", "reason": reason}] if reason else [],
                      finished_at=None if outcome == "running" else utcnow())
        session.add(run)
        session.flush()
        if run.finished_at is not None:  # decided without acting: the alert learns it now
            alerts.record_heal(session, target, alert_name, outcome, run.finished_at)
        record_audit(session, actor=ACTOR, action="heal.start" if outcome == "running" else f"heal.{outcome}",
                     resource="target", resource_id=target, success=outcome in ("running", "dry_run"),
                     details={"heal_run": run.id, "alert_name": alert_name, "flow_run_id": flow_run_id,
                              "reason": reason})
        return run.id


def record_step(settings: Settings, run_id: int, step: dict[str, Any]) -> None:
    """Append one step (an attempt, a health check, an approval) to the run and the audit trail."""
    with session_scope(settings.database, write_lock=True) as session:
        run = session.get(HealRun, run_id, with_for_update=True)
        if run is None:
            return
        run.steps = [*run.steps, {**step, "at": utcnow().isoformat()}]
        record_audit(session, actor=ACTOR, action=f"heal.{step['step']}", resource="target", resource_id=run.target,
                     success=bool(step.get("ok", True)), details={"heal_run": run_id, **step})


def finish_run(settings: Settings, run_id: int, outcome: str) -> dict[str, Any]:
    with session_scope(settings.database, write_lock=True) as session:
        run = session.get(HealRun, run_id, with_for_update=True)
        if run is None:
            raise LookupError(f"heal run {run_id} not found")
        run.outcome, run.finished_at = outcome, utcnow()
        alerts.record_heal(session, run.target, run.alert_name, outcome, run.finished_at)
        record_audit(session, actor=ACTOR, action="heal.finish", resource="target", resource_id=run.target,
                     success=outcome == "healed", details={"heal_run": run_id, "outcome": outcome})
        return run_view(run)


def run_view(run: HealRun) -> dict[str, Any]:
    return {"id": run.id, "target": run.target, "alert_name": run.alert_name, "flow_run_id": run.flow_run_id,
            "started_at": run.started_at.isoformat(), "finished_at": run.finished_at.isoformat()
            if run.finished_at else None, "outcome": run.outcome, "steps": run.steps}


def list_runs(settings: Settings, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with session_scope(settings.database) as session:
        query = select(HealRun).order_by(HealRun.id.desc()).limit(limit)
        if target:
            query = query.where(HealRun.target == target)
        return [run_view(run) for run in session.scalars(query)]


def backoff_delays(settings: Settings) -> list[float]:
    """Seconds to wait before each attempt of one action: 0, then backoff_seconds x multiplier^n."""
    healing = settings.monitoring.self_healing
    attempts = max(1, healing.max_retries)
    return [0.0] + [healing.backoff_seconds * healing.backoff_multiplier ** n for n in range(attempts - 1)]
