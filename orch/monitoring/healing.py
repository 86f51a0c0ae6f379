"""Self-healing policy: whether a heal may run now, the circuit breaker, and the record of each run.

The flow (``flows/self_heal.py``) follows the steps; this module decides and records, so every decision
is the same whichever process makes it and every step is in the database and the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from orch.audit import Caller, record_audit
from orch.config.schema import Settings
from orch.errors import OrchError
from orch.monitoring import alerts, silences
from orch.prefect_api import PrefectUnavailable, flow_run_state_type, resume_flow_run
from orch.storage.engine import session_scope
from orch.storage.models import HealRun
from orch.storage.types import utcnow

ACTOR = "system:self-heal"
ASKED = "asked"  # the ``state`` of the approval step the flow records just before it pauses for an answer
# no_worker: the target's host has no live ORCH worker to heal it on; escalated at once (orch/monitoring/hosts.py)
OUTCOMES = ("running", "healed", "failed", "circuit_open", "dry_run", "skipped", "no_worker")
COUNTED = ("running", "healed", "failed")  # what the circuit breaker counts: runs that acted


class HealRunNotFound(OrchError):
    """No heal run has that id."""

    status_code = 404


class NotAwaitingApproval(OrchError):
    """The heal run is not paused waiting for an operator's answer (never was, answered, or timed out)."""

    status_code = 409


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
    """Newest first, each with ``awaiting_approval`` (:func:`awaiting_approval`)."""
    with session_scope(settings.database) as session:
        query = select(HealRun).order_by(HealRun.id.desc()).limit(limit)
        if target:
            query = query.where(HealRun.target == target)
        runs = [run_view(run) for run in session.scalars(query)]
    return [{**run, "awaiting_approval": awaiting_approval(settings, run)} for run in runs]


def get_run(settings: Settings, run_id: int) -> dict[str, Any]:
    view = _read_run(settings, run_id)
    return {**view, "awaiting_approval": awaiting_approval(settings, view)}


def _read_run(settings: Settings, run_id: int) -> dict[str, Any]:
    with session_scope(settings.database) as session:
        run = session.get(HealRun, run_id)
        if run is None:
            raise HealRunNotFound(f"heal run {run_id} not found")
        return run_view(run)


def awaiting_approval(settings: Settings, run: dict[str, Any]) -> dict[str, Any] | None:
    """``{"action", "since", "timeout_at"}`` while the run waits for an answer, else None.

    Waiting means both: the run's last step is the approval it asked for (the flow records it just before
    pausing, and records the answer as the next step), and its Prefect flow run is Paused now. The steps
    alone would show a run whose process died mid-pause as waiting forever; Prefect's state alone does
    not say which action is asked. Prefect is asked only for such runs; when it cannot answer, the run
    is not shown as waiting (an answer could not be delivered either)."""
    try:
        return _waiting(settings, run)
    except PrefectUnavailable:
        return None


def _waiting(settings: Settings, run: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`awaiting_approval`, raising :class:`PrefectUnavailable` when Prefect cannot say."""
    last = run["steps"][-1] if run["steps"] else {}
    if (run["outcome"] != "running" or not run["flow_run_id"] or last.get("step") != "approval"
            or last.get("state") != ASKED):
        return None
    if flow_run_state_type(settings.prefect, run["flow_run_id"]) != "PAUSED":
        return None
    return {"action": last.get("action"), "since": last.get("at"), "timeout_at": last.get("timeout_at")}


def answer_approval(settings: Settings, run_id: int, approve: bool, comment: str, actor: str,
                    caller: Caller | None = None) -> dict[str, Any]:
    """Resume the paused flow run with the answer, as the Prefect UI's form would, naming ``actor``.

    The flow records the answer in the run's steps when it wakes (with the approver), the same step
    the Prefect UI's path records; this records who answered in the audit trail (``heal.approve`` or
    ``heal.deny``), with the outcome if Prefect refused to resume (the run timed out meanwhile)."""
    run = _read_run(settings, run_id)
    waiting = _waiting(settings, run)  # an unreachable Prefect is a 503 here, not "not waiting"
    if waiting is None:
        raise NotAwaitingApproval(f"heal run {run_id} is not waiting for approval")
    refused = resume_flow_run(settings.prefect, run["flow_run_id"],
                              {"approve": approve, "comment": comment, "approver": actor})
    with session_scope(settings.database, write_lock=True) as session:
        record_audit(session, actor=actor, action="heal.approve" if approve else "heal.deny", resource="target",
                     resource_id=run["target"], success=refused is None,
                     ip_address=caller and caller.ip_address, user_agent=caller and caller.user_agent,
                     details={"heal_run": run_id, "flow_run_id": run["flow_run_id"], "action": waiting["action"],
                              "comment": comment, **({"refused": refused} if refused else {})})
    if refused is not None:
        raise NotAwaitingApproval(f"heal run {run_id} could not be resumed: {refused}")
    return get_run(settings, run_id)


def backoff_delays(settings: Settings) -> list[float]:
    """Seconds to wait before each attempt of one action: 0, then backoff_seconds x multiplier^n."""
    healing = settings.monitoring.self_healing
    attempts = max(1, healing.max_retries)
    return [0.0] + [healing.backoff_seconds * healing.backoff_multiplier ** n for n in range(attempts - 1)]
