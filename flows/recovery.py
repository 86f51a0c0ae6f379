"""``service-recovery`` and ``emergency-recovery``: the guide's ``recover_service.sh`` and
``emergency_recovery.sh`` as flows. Every step reports what it found and did; a step that fails does not
stop the others, and the run ends Failed when any step did, after telling a human."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from orch.recovery.procedures import EMERGENCY, SERVICE, Step, failed_step
from tasks import recovery as steps


class RecoveryFailed(RuntimeError):
    """The run ends Failed, so Prefect shows it red and failure automations fire."""


def _run(procedure: str, chosen: tuple[Step, ...], dry_run: bool = False) -> dict[str, Any]:
    """The procedure's steps in its order (orch.recovery.procedures), each as its Prefect task; with
    ``dry_run`` the plan only (nothing changed, nobody notified)."""
    logger = get_run_logger()
    reports = []
    for step in (getattr(steps, function.__name__) for function in chosen):
        state = step(dry_run, return_state=True)
        reports.append(state.result() if state.is_completed() else
                       failed_step(step.name, RuntimeError(state.message or "failed")))
        logger.info("%s: found %s; did %s", reports[-1]["step"], reports[-1]["found"], reports[-1]["did"])
    notice = None if dry_run else steps.notify(procedure, reports)
    failed = [r["step"] for r in reports if not r["ok"]]
    if failed:
        raise RecoveryFailed(f"{procedure} failed at {', '.join(failed)}: manual intervention required")
    return {"procedure": procedure, "ok": True, "dry_run": dry_run, "steps": reports, "notification": notice}


@flow(name="service-recovery")
def service_recovery(dry_run: bool = False) -> dict[str, Any]:
    """Database (restore the newest verified backup if corrupt), stale locks, failed tasks, health;
    ``dry_run``: report what each step would do and change nothing."""
    return _run("service-recovery", SERVICE, dry_run)


@flow(name="emergency-recovery")
def emergency_recovery(dry_run: bool = False) -> dict[str, Any]:
    """Disk space first (old logs and backups go when it is low), then everything service recovery does;
    ``dry_run``: report what each step would do and change nothing."""
    return _run("emergency-recovery", EMERGENCY, dry_run)
