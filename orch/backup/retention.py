"""Retention: backups older than ``backup.retention_days`` go, but the newest ``backup.keep_last``
verified ones always stay, however old (a system that stopped backing up must not prune itself bare).

Also pruned past the retention age: pre-restore copies and files that look like backups but are not in
the catalog (an unverified leftover is not a backup). A dry run lists the same plan and deletes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from orch.backup.catalog import Catalog
from orch.backup.files import PARTIAL, PREFIX, backup_dir, remove_quietly
from orch.config.schema import Settings


def plan(settings: Settings, now: datetime | None = None) -> dict[str, Any]:
    """What a prune would remove and keep, with the reason for each."""
    now = now or datetime.now(timezone.utc)
    directory = backup_dir(settings)
    cutoff = now - timedelta(days=settings.backup.retention_days)
    entries = Catalog(directory).entries()
    newest = {e["file"] for e in sorted((e for e in entries if e.get("verified")),
                                        key=lambda e: e["created_at"], reverse=True)[: settings.backup.keep_last]}
    remove, keep = [], []
    for entry in entries:
        created = datetime.fromisoformat(entry["created_at"])
        if entry["file"] in newest:
            keep.append({"file": entry["file"], "reason": f"one of the newest {settings.backup.keep_last} verified"})
        elif created < cutoff:
            remove.append({"file": entry["file"], "created_at": entry["created_at"], "in_catalog": True,
                           "reason": f"older than {settings.backup.retention_days} days"})
        else:
            keep.append({"file": entry["file"], "reason": "within retention"})
    listed = {e["file"] for e in entries} | {e["extras"]["file"] for e in entries if e.get("extras")}
    loose = [p for p in directory.iterdir() if p.is_file() and p.name.startswith(PREFIX)
             and PARTIAL not in p.name and p.name not in listed]
    pre_restore = directory / "pre_restore"
    loose += [p for p in pre_restore.iterdir() if p.is_file()] if pre_restore.is_dir() else []
    for path in loose:
        modified = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        if modified < cutoff:
            remove.append({"file": str(path.relative_to(directory)), "created_at": modified.isoformat(),
                           "in_catalog": False, "reason": f"not a cataloged backup, older than "
                                                          f"{settings.backup.retention_days} days"})
    return {"directory": str(directory), "remove": remove, "keep": keep}


def prune(settings: Settings, *, dry_run: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Apply :func:`plan`: catalog entries first, then files (a crash between leaves a loose file that the
    next prune removes, never an entry pointing at nothing)."""
    result = plan(settings, now)
    result["dry_run"] = dry_run
    if dry_run or not result["remove"]:
        return result
    directory = Path(result["directory"])
    catalog = Catalog(directory)
    by_name = {e["file"]: e for e in catalog.entries()}
    cataloged = {item["file"] for item in result["remove"] if item["in_catalog"]}
    catalog.remove(cataloged)
    for item in result["remove"]:
        entry = by_name.get(item["file"])
        extras = [directory / entry["extras"]["file"]] if entry and entry.get("extras") else []
        remove_quietly(directory / item["file"], *extras)
    return result
