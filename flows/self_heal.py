"""Self-healing: bring a target back, following ``monitoring.self_healing``.

Actions in order (``restart``, ``isolate``, ``rollback``), each tried ``max_retries`` times with backoff
and a health check after every attempt; an exhausted action escalates to the next; when all are
exhausted a human is paged. Before acting: the switches, maintenance mode, silences and windows, and the
circuit breaker (``max_runs_per_hour`` per target). Actions listed in ``require_approval`` pause the run
for an answer, from the Prefect UI or ORCH's ``POST /heals/{id}/approval``; the run records that it asked
first (``GET /heals`` shows it waiting from that step and the Prefect state); no answer within
``approval_timeout`` means no. ``dry_run`` logs and audits the plan and changes nothing. Every step is
audited and emitted as a Prefect event.

The ``self-heal/auto`` deployment is on the ``orch-inprocess`` pool. The monitoring sweep creates each run
on the work queue of the target's host (``host-<name>``, orch/monitoring/hosts.py), so it runs in a thread
of that host's ORCH worker process (orch/stack/inprocess.py), where the target's commands, units and
processes are. When that host has no live worker the sweep creates the run on its own host with
``escalate`` saying why: the run records it, acts on nothing, and pages a human at once.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger, runtime
from prefect.input import RunInput

from orch.config.runtime import get_settings
from orch.monitoring import alerts, healing, messages
from orch.monitoring.targets import find_target, healing_plan
from orch.notify import send_notification
from orch.storage.types import utcnow
from tasks.healing import attempt_action, healthy_within


class Approval(RunInput):
    """What the Prefect UI (or ORCH's ``POST /heals/{id}/approval``) asks an operator before a destructive
    action; the API fills ``approver`` with its caller, so the run's steps say who answered."""

    approve: bool = False
    comment: str = ""
    approver: str = ""


def emit_step(target: str, step: dict[str, Any]) -> None:
    from prefect.events import emit_event

    emit_event(event=f"orch.heal.{step['step']}", resource={"prefect.resource.id": f"orch.target.{target}",
                                                            "prefect.resource.name": target},
               payload={key: value for key, value in step.items() if key != "step"})


def ask_approval(action: str, target: str, timeout: int) -> tuple[bool, str]:
    """Pause for an operator's answer; a timeout is a no, and the run carries on (to escalate or page)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run
    from prefect.states import Running

    description = f"Approve **{action}** on target **{target}**? No answer in {timeout} s means no."
    try:
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=description),
                                timeout=timeout, poll_interval=max(1, min(5, timeout // 2)))
    except FlowPauseTimeout:
        with get_client(sync_client=True) as client:  # the run goes on; the server still has it Paused
            client.set_flow_run_state(runtime.flow_run.id, Running(), force=True)
        return False, f"no approval within {timeout} s (timeout means no)"
    verdict = "approved" if answer.approve else "refused"
    return bool(answer.approve), verdict + (f" by {answer.approver}" if answer.approver else "") + (
        f": {answer.comment}" if answer.comment else "")


@flow(name="self-heal", flow_run_name="self-heal {target}")
def self_heal(target: str, alert_name: str = "target_down", summary: str = "",
              dry_run: bool | None = None, escalate: str = "") -> dict[str, Any]:
    """Heal ``target`` for the alert that fired; returns the outcome and every step. ``escalate``: why the
    target's host cannot heal it (no live worker there): nothing is tried, a human is paged."""
    logger = get_run_logger()
    settings = get_settings()
    spec = find_target(settings, target)
    healing_settings = settings.monitoring.self_healing
    plan = healing_plan(settings, spec)
    flow_run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    run_url = messages.flow_run_url(settings, flow_run_id)
    fired = f"{alert_name} on {target}: {summary}" if summary else f"{alert_name} on {target}"

    gate = healing.Gate(False, "no_worker", escalate) if escalate else healing.gate(settings, target, alert_name)
    if not gate.allowed:
        healing.start_run(settings, target, alert_name, flow_run_id, gate.outcome, gate.reason)
        emit_step(target, {"step": gate.outcome, "reason": gate.reason})
        logger.warning("not healing %s: %s", target, gate.reason)
        severity = "critical" if gate.outcome in ("circuit_open", "no_worker") else "warning"
        title = f"{target} NOT healed: a human must act" if escalate else \
            f"healing {gate.outcome.replace('_', ' ')}"
        send_notification(settings, f"{alert_name} on {target}: {title}",
                          f"{fired}\nHealing did nothing: {gate.reason}.\nRun: {run_url}", severity,
                          labels={"alertname": alert_name, "target": target})
        return {"outcome": gate.outcome, "reason": gate.reason, "steps": []}

    if healing_settings.dry_run if dry_run is None else dry_run:
        delays = healing.backoff_delays(settings)
        reason = (f"dry run: would try {', '.join(plan) or 'nothing (no action configured)'}, each up to "
                  f"{len(delays)} times (waits {', '.join(f'{d:g}' for d in delays)} s), health check after each"
                  + (f"; approval required for {', '.join(healing_settings.require_approval)}"
                     if healing_settings.require_approval else ""))
        healing.start_run(settings, target, alert_name, flow_run_id, "dry_run", reason)
        emit_step(target, {"step": "dry_run", "plan": plan})
        logger.info(reason)
        return {"outcome": "dry_run", "plan": plan, "reason": reason, "steps": []}

    run_id = healing.start_run(settings, target, alert_name, flow_run_id)
    steps: list[dict[str, Any]] = []

    def record(step: dict[str, Any]) -> None:
        steps.append(step)
        healing.record_step(settings, run_id, step)
        emit_step(target, step)
        logger.info("%s: %s", step["step"], step.get("detail", ""))

    for action in plan:
        if action in healing_settings.require_approval:
            timeout = healing_settings.approval_timeout
            record({"step": "approval", "state": healing.ASKED, "action": action,
                    "timeout_at": (utcnow() + timedelta(seconds=timeout)).isoformat(),
                    "detail": f"waiting up to {timeout} s for approval of {action}"})
            approved, detail = ask_approval(action, target, timeout)
            record({"step": "approval", "action": action, "ok": approved, "detail": detail})
            if not approved:
                continue  # escalate without doing it
        for number, delay in enumerate(healing.backoff_delays(settings), start=1):
            time.sleep(delay)
            result = attempt_action(target, action, number)
            record(result)
            if not result["ok"]:
                continue
            check = healthy_within(target, healing_settings.settle_seconds)
            record({**check, "action": action, "attempt": number})
            if check["ok"]:
                healing.finish_run(settings, run_id, "healed")
                _report(settings, target, alert_name, fired, steps, "healed", run_url)
                return {"outcome": "healed", "action": action, "attempt": number, "steps": steps}
        record({"step": "escalate", "action": action, "ok": False,
                "detail": f"{action} exhausted; " + ("escalating" if action != plan[-1] else "no action left")})
    healing.finish_run(settings, run_id, "failed")
    _report(settings, target, alert_name, fired, steps, "failed", run_url)
    return {"outcome": "failed", "steps": steps}


def _report(settings: Any, target: str, alert_name: str, fired: str, steps: list[dict[str, Any]], outcome: str,
            run_url: str | None) -> None:
    """One message: what fired, where, the value against the threshold, what healing did, the run."""
    did = [f"- {s['step']}" + (f" #{s['attempt']}" if "attempt" in s and s["step"] != "health_check" else "")
           + f": {'ok' if s.get('ok') else 'failed'} - {s.get('detail', '')}" for s in steps
           if s.get("state") != healing.ASKED]  # the answer's step says it all
    heals = alerts.heals_of(settings, target, alert_name)
    again = f" (heal {heals} since it fired)" if heals > 1 else ""
    if outcome == "healed":
        title, severity, verdict = f"{target} healed after {alert_name}{again}", "warning", "Healed."
    else:
        title, severity = f"{target} NOT healed after {alert_name}{again}: a human must act", "critical"
        verdict = "Every healing action is exhausted; paging a human."
    body = "\n".join([f"Fired: {fired}", "Healing did:", *did, verdict] + ([f"Run: {run_url}"] if run_url else []))
    send_notification(settings, title, body, severity, labels={"alertname": alert_name, "target": target},
                      resolved=outcome == "healed")
