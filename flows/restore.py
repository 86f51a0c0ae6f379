"""The ``restore`` flow: the guide's ``scripts/restore_database.py``, checked before it touches anything."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks import backup as steps
from tasks.notify import notify, notify_failure


@flow(name="restore")
def restore(backup: str = "latest") -> dict[str, Any]:
    """Verify the backup on a copy, then pause dispatch, keep a pre-restore copy, swap, check, resume.

    ``backup`` is ``latest`` (the newest backup that verifies; newer ones that fail are skipped, each
    named with its reason in the log and the notification) or a backup's name in the backup directory;
    a path leading anywhere else is refused unread (orch.backup.restore.backup_path)."""
    logger = get_run_logger()
    try:
        candidate = steps.check_backup(backup)
        report = steps.swap_in(candidate, f"restore:{flow_run.get_id() or 'local'}")
    except Exception as exc:
        notify_failure("restore", exc)
        raise
    for line in report["skipped"]:  # `latest` passed over newer backups that failed their check
        logger.warning(line)
    logger.info("restored %s; pre-restore copy %s", report["restored"], report["pre_restore_copy"])
    notify("ORCH-Next database restored", "\n".join(f"- {step}" for step in report["steps"]), "warning")
    return report
