"""The steps of service and emergency recovery (the guide's ``recover_service.sh`` and
``emergency_recovery.sh``), each returning what it found, what it did and why.

Nothing destructive happens without a reason in its report: logs and backups are removed only when the
disk is past ``monitoring.alert_thresholds.disk_usage_percent``, and the database is restored only when
its integrity check fails (or its file is gone), from the newest backup that verifies (``latest``).

Every step takes ``dry_run``: then it only looks, and its report says what it *would* do (which backup it
would restore, which tasks it would re-queue, which files it would remove), so an operator can read the
plan of ``orch recover --dry-run`` before letting it act.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from orch.config.schema import Settings
from orch.logging_config import get_logger

log = get_logger(__name__)
CORRUPTION_SIGNS = ("malformed", "not a database", "integrity check failed", "file is encrypted",
                    "database file not found")


def _report(step: str, found: str, did: str, ok: bool = True, **facts: Any) -> dict[str, Any]:
    report = {"step": step, "ok": ok, "found": found, "did": did, **facts}
    log.info("recovery %s: found %s; did %s", step, found, did,
             extra={"event_type": "recovery.step", "step": step, "ok": ok})
    return report


def disk_space(settings: Settings, dry_run: bool = False) -> dict[str, Any]:
    """When the data disk is past the threshold: remove rotated logs past ``maintenance.log_retention_days``
    and prune backups past retention (the newest verified ones stay)."""
    from orch.backup.retention import prune

    data_dir = Path(settings.data_dir)
    if not dry_run:
        data_dir.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(data_dir if data_dir.exists() else data_dir.parent)
    percent = round(usage.used * 100 / usage.total, 1)
    threshold = settings.monitoring.alert_thresholds.disk_usage_percent
    found = f"disk {percent}% used (threshold {threshold:g}%)"
    if percent <= threshold:
        return _report("disk-space", found, "nothing", used_percent=percent)
    cutoff = time.time() - settings.maintenance.log_retention_days * 86400
    log_dirs = {data_dir / "logs"} | ({Path(settings.logging.file).parent} if settings.logging.file else set())
    removed_logs = []
    for directory in log_dirs:
        if directory.is_dir():
            for path in directory.glob("*.log.*"):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    if not dry_run:
                        path.unlink()
                    removed_logs.append(str(path))
    pruned = [item["file"] for item in prune(settings, dry_run=dry_run)["remove"]]
    did = (f"{'would remove' if dry_run else 'removed'} {len(removed_logs)} rotated log(s) older than "
           f"{settings.maintenance.log_retention_days} days and {len(pruned)} backup(s) past retention "
           f"({', '.join(pruned[:10]) or 'none'}), because the disk is low")
    return _report("disk-space", found, did, used_percent=percent, removed_logs=removed_logs, pruned_backups=pruned)


def database(settings: Settings, dry_run: bool = False) -> dict[str, Any]:
    """Check the database; restore the newest verified backup if it is corrupt or gone; migrate if behind."""
    from orch.backup.catalog import Catalog
    from orch.backup.files import BackupError, backup_dir
    from orch.backup.restore import live_engine, restore_backup
    from orch.storage.health import check_database
    from orch.storage.migrate import head_revision, upgrade

    health = check_database(settings.database)
    if health.healthy:
        return _report("database", health.summary(), "nothing")
    problem = health.problem or "unhealthy"
    if any(sign in problem for sign in CORRUPTION_SIGNS):
        newest = Catalog(backup_dir(settings)).newest_verified(live_engine(settings))
        if newest is None:
            return _report("database", problem, "nothing: no verified backup, manual intervention required",
                           ok=False)
        if dry_run:
            return _report("database", problem, f"would restore the newest backup that verifies, trying "
                           f"{newest['file']} (taken {newest['created_at']}) first, because the database is "
                           "corrupt")
        try:
            restored = restore_backup(settings, "latest", owner="recovery")
        except BackupError as exc:  # every backup failed its check: the report says which and why
            return _report("database", problem, f"nothing: {exc}; manual intervention required", ok=False)
        skipped = "".join(f"; {line}" for line in restored.get("skipped", []))
        return _report("database", problem, f"restored {restored['restored']} because the database is "
                       f"corrupt{skipped}", restore=restored)
    if dry_run and "orch db migrate" in problem:
        return _report("database", problem, f"would migrate to {head_revision()}")
    if "orch db migrate" in problem:
        result = upgrade(settings.database)
        return _report("database", problem, f"migrated {result.before} -> {result.after}")
    return _report("database", problem, "nothing: not a corruption this step can repair", ok=False)


def stale_locks(settings: Settings, dry_run: bool = False) -> dict[str, Any]:
    """Expired lock rows (the guide's ``cleanup_expired_locks``) and the old system's lock files."""
    from sqlalchemy import select

    from orch.dispatch.locks import LockManager
    from orch.storage.engine import session_scope
    from orch.storage.models import ResourceLock
    from orch.storage.types import utcnow

    files = [p for p in (Path(settings.data_dir) / "locks").glob("*.lock") if p.is_file()]
    if dry_run:
        with session_scope(settings.database) as session:
            names = list(session.scalars(select(ResourceLock.resource).where(ResourceLock.expires_at <= utcnow())))
        return _report("stale-locks", f"{len(names)} expired lock(s), {len(files)} lock file(s) in data/locks",
                       f"would remove {', '.join([*names, *(p.name for p in files)][:20])}" if names or files
                       else "nothing", expired_locks=len(names), lock_names=names, lock_files=[str(p) for p in files])
    expired = LockManager(settings).cleanup_expired()
    for path in files:
        path.unlink()
    return _report("stale-locks", f"{expired} expired lock(s), {len(files)} lock file(s) in data/locks",
                   "removed them" if expired or files else "nothing", expired_locks=expired,
                   lock_files=[str(p) for p in files])


def failed_tasks(settings: Settings, dry_run: bool = False) -> dict[str, Any]:
    """Re-queue failed and timed-out tasks with fresh attempts (the guide's ``reset_failed_tasks``)."""
    from orch.dispatch.queue import TaskQueue

    if dry_run:  # the tasks reset_failed takes: failed and timed-out ones
        from sqlalchemy import select

        from orch.storage.engine import session_scope
        from orch.storage.models import Task

        with session_scope(settings.database) as session:
            ids = list(session.scalars(select(Task.task_id).where(Task.status.in_(("failed", "timed_out")))
                                       .order_by(Task.created_at)))
        return _report("failed-tasks", f"{len(ids)} failed or timed-out task(s)",
                       f"would re-queue {len(ids)}: {', '.join(ids[:20])}{' ...' if len(ids) > 20 else ''}"
                       if ids else "nothing", task_ids=ids[:100])
    reset = TaskQueue(settings).reset_failed("recovery")
    return _report("failed-tasks", f"{len(reset)} failed or timed-out task(s)",
                   f"re-queued {len(reset)}" if reset else "nothing", task_ids=reset[:100])


def health(settings: Settings, dry_run: bool = False) -> dict[str, Any]:
    """The database must be healthy; Prefect and the ORCH API are reported (a host may run neither).
    It only looks, so a dry run runs it as it is."""
    from orch.http import http_client
    from orch.prefect_api import prefect_readiness
    from orch.storage.health import check_database

    db = check_database(settings.database)
    prefect = prefect_readiness(settings.prefect, timeout=5)
    try:
        with http_client(timeout=5) as client:
            api = client.get(f"http://{settings.api.host}:{settings.api.port}/health").json().get("status", "?")
    except Exception as exc:  # noqa: BLE001 - any failure to answer is "unreachable", reported as such
        api = f"unreachable ({type(exc).__name__})"
    found = (f"database {'healthy' if db.healthy else db.problem}; "
             f"Prefect {'ready' if prefect.ready else 'not ready'}; ORCH API {api}")
    return _report("health", found, "nothing", ok=db.healthy, database_healthy=db.healthy,
                   prefect_ready=prefect.ready, api=api)


def notify(settings: Settings, procedure: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Tell the humans what happened: critical when a step failed, warning when something was repaired."""
    from orch.notify import send_notification

    failed = [r for r in reports if not r["ok"]]
    acted = [r for r in reports if r["did"] != "nothing"]
    severity = "critical" if failed else "warning" if acted else "info"
    outcome = "FAILED - manual intervention required" if failed else "completed"
    body = "\n".join(f"- {r['step']}: found {r['found']}; did {r['did']}" for r in reports)
    sent = send_notification(settings, f"ORCH-Next {procedure} {outcome}", body, severity)
    return {"severity": severity, "sent_via": sent, "outcome": outcome}
