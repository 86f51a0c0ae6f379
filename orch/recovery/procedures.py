"""Service and emergency recovery as ordered steps, for the CLI and scripts (the flows in
``flows/recovery.py`` run the same steps as Prefect tasks, in the same order)."""

from __future__ import annotations

from typing import Any, Protocol

from orch.config.schema import Settings
from orch.recovery import steps


class Step(Protocol):
    """A recovery step: what it found and did; with ``dry_run``, what it would do, changing nothing."""

    __name__: str

    def __call__(self, settings: Settings, dry_run: bool = False) -> dict[str, Any]: ...



SERVICE: tuple[Step, ...] = (steps.database, steps.stale_locks, steps.failed_tasks, steps.health)
EMERGENCY: tuple[Step, ...] = (steps.disk_space, *SERVICE)


def failed_step(name: str, exc: BaseException) -> dict[str, Any]:
    """A step that raised still gets a report line, and the next steps still run."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return {"step": name, "ok": False, "found": f"{type(exc).__name__}: {first_line}",
            "did": "nothing (the step failed)"}


def run(settings: Settings, procedure: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Run ``service-recovery`` or ``emergency-recovery``; ``ok`` only when every step is.

    With ``dry_run`` every step only looks and reports what it would do, and nobody is notified: the
    plan is for the operator who asked for it."""
    chosen = EMERGENCY if procedure == "emergency-recovery" else SERVICE
    reports = []
    for step in chosen:
        try:
            reports.append(step(settings, dry_run=dry_run))
        except Exception as exc:  # noqa: BLE001 - reported, and recovery goes on with the next step
            reports.append(failed_step(step.__name__.replace("_", "-"), exc))
    notice = None if dry_run else steps.notify(settings, procedure, reports)
    return {"procedure": procedure, "ok": all(r["ok"] for r in reports), "dry_run": dry_run, "steps": reports,
            "notification": notice}
