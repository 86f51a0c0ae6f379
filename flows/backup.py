"""The ``backup`` flow: the guide's ``scripts/backup_database.py``, verified before it counts.

Daily at 02:00 (``kind=daily``) and a weekly full backup on Sunday at 03:00 (``kind=full``: the ORCH
database plus the embedded Prefect database, the configuration without secrets and the SBOM evidence).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from orch.backup.guard import database_lock
from orch.config.runtime import get_settings
from tasks import backup as steps
from tasks.notify import notify_failure


@flow(name="backup")
def backup(kind: str = "daily") -> dict[str, Any]:
    """Snapshot, verify (checksum, integrity, data quality), publish, then apply retention."""
    logger = get_run_logger()
    settings = get_settings()
    try:
        with database_lock(settings, f"backup:{flow_run.get_id() or 'local'}"):
            steps.sweep_partials()
            snap = steps.snapshot(kind)
            entry = steps.verify(snap)
            entry = steps.publish(snap, entry)
        retention = steps.apply_retention()
    except Exception as exc:
        notify_failure("backup", exc)
        raise
    logger.info("backup %s verified and cataloged (%s bytes, sha256 %s); pruned %d", entry["file"],
                entry["size_bytes"], entry["sha256"], len(retention["remove"]))
    return {"backup": entry, "pruned": [item["file"] for item in retention["remove"]]}
