"""The backups as the API and the console show them: the catalog newest first, each with its latest
verification, and verifying one again on request.

Verification is ``orch backup verify``'s (:func:`orch.backup.restore.check`, on a copy, its verdict on a
cataloged file written to the catalog), so the console, the CLI and ``restore latest`` agree on which
backups count.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orch.audit import Caller, record_audit
from orch.backup.catalog import Catalog
from orch.backup.files import BackupError, BackupVerificationFailed, backup_dir
from orch.backup.restore import check, discard, live_engine
from orch.config.schema import Settings
from orch.security.flow_access import confined
from orch.storage.engine import session_scope

SUFFIXES = {".db.gz": "sqlite", ".dump": "postgresql"}


class InvalidBackupName(BackupError):
    """A name that is not a plain file name in the backup directory (a path, ``..``)."""

    status_code = 422


class BackupNotFound(BackupError):
    """No backup file of that name in the backup directory."""

    status_code = 404


def backups_overview(settings: Settings) -> dict[str, Any]:
    """Cataloged backups newest first, then files the catalog does not know (never verified, age unknown)."""
    directory = backup_dir(settings)
    catalog = Catalog(directory)
    engine = live_engine(settings)
    newest = catalog.newest_verified(engine)
    return {"directory": str(directory), "engine": engine,
            "backups": [_entry_view(directory, entry) for entry in reversed(catalog.entries())]
            + [_stranger_view(directory, name) for name in catalog.uncataloged()],
            "newest_verified": newest["file"] if newest else None}


def verify_backup(settings: Settings, name: str, actor: str, caller: Caller | None = None) -> dict[str, Any]:
    """Verify ``name`` again and return its entry as :func:`backups_overview` shows it now.

    A file found unsound answers with ``verified: false`` and the reason (that is the verdict asked
    for); a refusal that is no verdict on the file (another engine's backup, no disk space for the
    copy) raises :class:`BackupError`. Audited as ``backup.verify``."""
    directory = backup_dir(settings)
    path = _backup_file(directory, name)
    failure = None
    try:
        discard(check(settings, name))
    except BackupVerificationFailed as exc:
        failure = str(exc)
    at = datetime.now(timezone.utc).isoformat()
    entry = Catalog(directory).find(name)
    view = _entry_view(directory, entry) if entry is not None else {
        **_stranger_view(directory, path.name), "verified": failure is None, "verified_at": None if failure else at,
        "verification_failed": {"at": at, "reason": failure} if failure else None}
    with session_scope(settings.database, write_lock=True) as session:
        record_audit(session, actor=actor, action="backup.verify", resource="backup", resource_id=name,
                     success=failure is None, ip_address=caller and caller.ip_address,
                     user_agent=caller and caller.user_agent, details={"failure": failure} if failure else {})
    return view


def _backup_file(directory: Path, name: str) -> Path:
    """``name`` as a backup file directly in ``directory``, or why not: a path never reaches the check."""
    if not name or name in (".", "..") or any(char in name for char in "/\\\0"):
        raise InvalidBackupName(f"{name[:200]!r} is not a backup file name (no directories, no '..')")
    path = confined(name, [directory])
    if path is None or path.parent != directory.resolve():
        raise InvalidBackupName(f"{name[:200]!r} leads outside the backup directory")
    if _engine_of(name) is None or not path.is_file():
        raise BackupNotFound(f"no backup named {name[:200]!r} in {directory}")
    return path


def _engine_of(name: str) -> str | None:
    return next((engine for suffix, engine in SUFFIXES.items() if name.endswith(suffix)), None)


def _entry_view(directory: Path, entry: dict[str, Any]) -> dict[str, Any]:
    failed = entry.get("verification_failed")
    return {"file": entry["file"], "engine": entry["engine"], "kind": entry.get("kind"),
            "created_at": entry["created_at"], "size_bytes": entry["size_bytes"],
            "verified": bool(entry.get("verified")), "verified_at": entry.get("verified_at"),
            "verification_failed": {"at": failed["at"], "reason": failed["reason"]} if failed and not
            entry.get("verified") else None,
            "cataloged": True, "present": (directory / entry["file"]).is_file()}


def _stranger_view(directory: Path, name: str) -> dict[str, Any]:
    return {"file": name, "engine": _engine_of(name), "kind": None, "created_at": None,
            "size_bytes": (directory / name).stat().st_size, "verified": False, "verified_at": None,
            "verification_failed": None, "cataloged": False, "present": True}
