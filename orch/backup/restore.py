"""Verify and restore a backup: everything is checked on a copy before the live database is touched.

``latest`` is the newest backup that passes this check now: newer ones that fail it are skipped, one
line each saying why (the verdict is recorded in the catalog for ``backup list``), so a corrupt newest
backup costs the operator the time since the one before it, not the restore. A backup named explicitly
that fails is refused.

Order (the issue's and the guide's procedure, made safe): checksum against the catalog, decompress to a
temporary file, integrity check, data-quality suite, migrate the *copy* if its schema is older (so a
migration that fails refuses the backup instead of half-upgrading the live data), then stop dispatch and
take the database lock, keep a pre-restore copy of the live database, swap in one transaction, check
the result, release. If the swap or the check fails, the pre-restore copy is put back.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orch.backup import postgres, sqlite
from orch.backup.catalog import Catalog
from orch.backup.files import (
    PARTIAL,
    BackupError,
    BackupVerificationFailed,
    backup_dir,
    gunzip_file,
    require_free_space,
    sha256_file,
    timestamp,
)
from orch.backup.validation import describe_failure
from orch.config.schema import DatabaseSettings, Settings
from orch.logging_config import get_logger
from orch.storage.engine import dispose_engines, is_sqlite, safe_url

log = get_logger(__name__)


@dataclass
class Candidate:
    """A backup decompressed and checked, ready to replace the live database (not yet touching it)."""

    source: str
    engine: str
    path: str                       # SQLite: the checked copy; PostgreSQL: the dump itself
    facts: dict[str, Any]
    in_catalog: bool
    steps: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # newer backups ``latest`` passed over, one line each
    pre_restore: str = ""  # where a restore will keep the live database's copy (shown before confirming)


def backup_path(settings: Settings, ref: str) -> Path:
    """``ref`` (a backup's name, or a path) resolved inside the backup directory, or :class:`BackupError`.

    Whoever may start the ``restore`` flow names the file it opens, so a path outside the backup
    directory (``/etc/passwd``, ``../x``, a symlink leading out) is refused before it is opened: a
    restore can neither read nor echo a file it was not made for. To restore a file from elsewhere,
    copy it into the backup directory first."""
    from orch.security.flow_access import confined

    directory = backup_dir(settings)
    path = confined(ref, [directory])
    if path is None:
        raise BackupError(f"backup {ref[:200]!r} is outside the backup directory {directory}: give a backup's "
                          "name (orch backup list) or 'latest', or copy the file into that directory first")
    return path


def live_engine(settings: Settings) -> str:
    return "sqlite" if is_sqlite(settings.database.url or "") else "postgresql"


def resolve(settings: Settings, ref: str) -> tuple[Path, dict[str, Any] | None]:
    """A named backup: a file in the backup directory (its catalog name, or a path that leads there)."""
    path = backup_path(settings, ref)
    if not path.is_file():
        raise BackupError(f"backup file not found: {ref}")
    entry = Catalog(backup_dir(settings)).find(path.name) if path.parent == backup_dir(settings).resolve() else None
    return path, entry


def check(settings: Settings, ref: str, *, migrate: bool = False) -> Candidate:
    """Everything that can refuse a backup, on a copy. With ``migrate``, bring the copy to head.

    ``latest`` walks this engine's cataloged backups newest first and takes the first that passes; each
    newer one passed over becomes a ``skipped NAME: why`` line at the head of the candidate's steps."""
    if ref != "latest":
        path, entry = resolve(settings, ref)
        return _check_recorded(settings, path, entry, migrate)
    directory, engine = backup_dir(settings), live_engine(settings)
    catalog = Catalog(directory)
    skipped: list[str] = []
    for entry in reversed(catalog.entries()):
        if entry["engine"] != engine:
            continue
        name = entry["file"]
        if not (directory / name).is_file():
            skipped.append(f"skipped {name}: its file is missing")
            continue
        try:  # checked again even if it failed before: a file put back from elsewhere counts again
            candidate = _check_recorded(settings, directory / name, entry, migrate)
        except BackupVerificationFailed as exc:
            skipped.append(f"skipped {name}: {exc}")
            continue
        candidate.skipped = skipped
        candidate.steps[:0] = skipped
        return candidate
    raise BackupError(f"no verified {engine} backup in {catalog.path} (run: orch backup create)"
                      + "".join(f"; {line}" for line in skipped))


def _check_recorded(settings: Settings, path: Path, entry: dict[str, Any] | None, migrate: bool) -> Candidate:
    """:func:`_check`, with its verdict on a cataloged file written to the catalog (``backup list``)."""
    catalog = Catalog(backup_dir(settings))
    try:
        candidate = _check(settings, path, entry, migrate)
    except BackupVerificationFailed as exc:
        if entry is not None:
            catalog.record_verification(entry["file"], _now(), str(exc))
        raise
    if entry is not None:
        catalog.record_verification(entry["file"], _now())
    candidate.pre_restore = str(pre_restore_path(settings, candidate.engine))
    return candidate


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _check(settings: Settings, path: Path, entry: dict[str, Any] | None, migrate: bool) -> Candidate:
    from orch.storage.migrate import head_revision

    steps: list[str] = []
    engine = "postgresql" if path.name.endswith(".dump") else "sqlite"
    if engine != live_engine(settings):
        raise BackupError(f"{path.name} is a {engine} backup; the configured database is {live_engine(settings)}")
    mismatch = BackupVerificationFailed(f"{path.name} does not match its catalog checksum (corrupt or altered); "
                                  "refusing it")
    if entry is not None and path.stat().st_size != entry["size_bytes"]:
        raise mismatch
    if engine == "postgresql":
        from orch.backup.create import verify_dump

        if entry is not None and sha256_file(path) != entry["sha256"]:
            raise mismatch
        _note_checksum(steps, entry)
        facts = verify_dump(settings, path)
        candidate = Candidate(str(path), engine, str(path), facts, entry is not None, steps)
    else:
        from orch.backup.create import check_sqlite_copy

        copy = backup_dir(settings) / f".restore_{timestamp()}_{int(time.time() * 1000) % 1000}.db{PARTIAL}"
        require_free_space(copy.parent, path.stat().st_size * 8)
        try:
            try:
                checksum = gunzip_file(path, copy)  # hashed in the same read
            except BackupError:
                if entry is not None and sha256_file(path) != entry["sha256"]:
                    raise mismatch from None
                raise
            if entry is not None and checksum != entry["sha256"]:
                raise mismatch
            _note_checksum(steps, entry)
            try:
                facts = check_sqlite_copy(copy, settings.database.timeout)
            except BackupError as exc:  # the copy is unsound: a verdict on the file
                raise BackupVerificationFailed(f"{path.name}: {exc}; refusing it") from None
        except BaseException:
            sqlite.remove_files(copy)
            raise
        candidate = Candidate(str(path), engine, str(copy), facts, entry is not None, steps)
    try:
        steps.append(f"integrity {facts['integrity']}")
        if not facts["validation"]["success"]:
            raise BackupVerificationFailed(f"{path.name}: {describe_failure(facts['validation'])}; refusing it")
        steps.append(f"data-quality suite passed ({facts['validation']['evaluated']} expectations)")
        revision, head = facts["schema_revision"], head_revision()
        if revision is None:
            raise BackupVerificationFailed(f"{path.name} has no schema revision; it is not an ORCH database")
        if revision != head:
            if not _known_revision(revision):
                raise BackupError(f"{path.name} is at schema {revision}, unknown to this code (head {head}): "
                                  "restore it with the ORCH version that wrote it")
            if migrate and engine == "sqlite":
                _migrate_copy(Path(candidate.path))
                steps.append(f"copy migrated {revision} -> {head}")
    except BaseException:
        discard(candidate)
        raise
    return candidate


def restore_backup(settings: Settings, ref: str, owner: str = "restore") -> dict[str, Any]:
    """The whole restore (CLI, scripts and the ``restore`` flow's tasks share these functions)."""
    candidate = check(settings, ref, migrate=True)
    try:
        return swap(settings, candidate, owner)
    finally:
        discard(candidate)


def swap(settings: Settings, candidate: Candidate, owner: str) -> dict[str, Any]:
    """Pause dispatch, keep a pre-restore copy, replace the live data, check it; roll back on failure."""
    from orch.backup.guard import LockUnavailable, restore_locks

    started = time.monotonic()
    steps = list(candidate.steps)
    with contextlib.ExitStack() as stack:
        held = None
        try:
            held = stack.enter_context(restore_locks(settings, owner))
            steps.append("dispatch paused, orch:database held")
        except LockUnavailable as exc:
            if "locked" in str(exc):
                raise BackupError(f"the live database is busy ({exc}); nothing was changed, retry") from None
            # a missing or corrupt database cannot record the pause; replacing it is what a restore is for
            steps.append(f"live database unusable ({exc}): no pause recorded in it")
        try:
            if candidate.engine == "sqlite":
                pre = _swap_sqlite(settings, candidate, owner if held else None, steps)
            else:
                pre = _swap_postgres(settings, candidate, held, steps)
        finally:
            dispose_engines()
    if held is not None:
        steps.append("dispatch resumed")
    from orch.audit import record_audit
    from orch.storage.engine import clear_corruption, session_scope

    clear_corruption(settings.database.url or "")  # the restored file was checked: the API may accept work again

    with session_scope(settings.database) as session:  # in the restored database: the act that made it
        record_audit(session, actor=owner, action="backup.restore", resource="database",
                     resource_id=Path(candidate.source).name, details={"pre_restore_copy": str(pre)})
    report = {"restored": Path(candidate.source).name, "database": safe_url(settings.database.url or ""),
              "pre_restore_copy": str(pre), "schema_revision_of_backup": candidate.facts["schema_revision"],
              "row_counts": candidate.facts["row_counts"], "seconds": round(time.monotonic() - started, 3),
              "skipped": candidate.skipped, "steps": steps}
    log.info("restored %s into %s", report["restored"], report["database"], extra={"event_type": "backup.restored"})
    return report


def _swap_sqlite(settings: Settings, candidate: Candidate, owner: str | None, steps: list[str]) -> Path:
    live = sqlite.sqlite_path(settings.database.url or "")
    pre = Path(candidate.pre_restore) if candidate.pre_restore else pre_restore_path(settings, "sqlite")
    pre.parent.mkdir(exist_ok=True)
    if live.exists():
        try:
            sqlite.copy(live, pre, settings.database.timeout)
        except BackupError:  # a damaged file may not copy page by page; keep its bytes for forensics
            for suffix in ("", "-wal"):
                if live.with_name(live.name + suffix).exists():
                    shutil.copy2(live.with_name(live.name + suffix), pre.with_name(pre.name + suffix))
        steps.append(f"pre-restore copy {pre}")
    if owner is not None:
        _carry_locks(live, Path(candidate.path), owner, settings.database.timeout)
    try:
        sqlite.copy(Path(candidate.path), live, settings.database.timeout)
    except BackupError as exc:  # one transaction: when it fails, the live database is as it was
        raise BackupError(f"restore of {Path(candidate.source).name} failed, the live database is unchanged: "
                          f"{exc}") from None
    steps.append("live database replaced in one transaction")
    try:
        _require_restored(sqlite.restored_facts(live, settings.database.timeout))
        steps.append("restored database checked")
    except BaseException as exc:  # noqa: BLE001 - whatever went wrong, the pre-restore copy goes back
        if pre.exists():
            sqlite.copy(pre, live, settings.database.timeout)
            steps.append("rolled back to the pre-restore copy")
        raise BackupError(f"restore of {Path(candidate.source).name} failed and was rolled back: {exc}") from None
    return pre


def _swap_postgres(settings: Settings, candidate: Candidate, held: Any, steps: list[str]) -> Path:
    from orch.storage.migrate import upgrade

    url = settings.database.url or ""
    pre = Path(candidate.pre_restore) if candidate.pre_restore else pre_restore_path(settings, "postgresql")
    pre.parent.mkdir(exist_ok=True)
    postgres.dump(settings, url, pre)
    steps.append(f"pre-restore copy {pre}")
    try:
        postgres.restore(settings, url, Path(candidate.path))
        dispose_engines()
        if held is not None:
            held.reassert(take_over=True)
        steps.append("live database replaced in one transaction")
        result = upgrade(DatabaseSettings(url=url, timeout=settings.database.timeout))
        if result.changed:
            steps.append(f"migrated {result.before} -> {result.after}")
        _require_restored(postgres.inspect(url))
        steps.append("restored database checked")
    except BaseException as exc:  # noqa: BLE001 - whatever went wrong, the pre-restore copy goes back
        postgres.restore(settings, url, pre)
        dispose_engines()
        if held is not None:
            held.reassert(take_over=True)
        steps.append("rolled back to the pre-restore copy")
        raise BackupError(f"restore of {Path(candidate.source).name} failed and was rolled back: {exc}") from None
    return pre


def _note_checksum(steps: list[str], entry: dict[str, Any] | None) -> None:
    steps.append("checksum matches the catalog" if entry is not None else "not in the catalog: no checksum to compare")


def discard(candidate: Candidate) -> None:
    if candidate.engine == "sqlite":
        sqlite.remove_files(Path(candidate.path))


def _require_restored(facts: dict[str, Any]) -> None:
    from orch.storage.migrate import head_revision

    if facts["integrity"] != "ok":
        raise BackupError(f"the restored database failed its check: {facts['integrity']}")
    if facts["schema_revision"] != head_revision():
        raise BackupError(f"the restored database is at schema {facts['schema_revision']}, not {head_revision()}")


def pre_restore_path(settings: Settings, engine: str) -> Path:
    """Where a restore keeps the live database's copy; named when the backup is checked, so the operator
    is told the path before confirming (the directory is made when the copy is written)."""
    suffix = "db" if engine == "sqlite" else "dump"
    return backup_dir(settings) / "pre_restore" / f"orch_pre_restore_{timestamp()}.{suffix}"


def _carry_locks(live: Path, copy: Path, owner: str, timeout: float) -> None:
    """Put our lock rows into the copy, so the restored database is still paused and locked for us."""
    source = sqlite.connect(live, timeout)
    try:
        rows = source.execute("SELECT resource, owner, priority, acquired_at, expires_at FROM resource_locks "
                              "WHERE owner = ?", (owner,)).fetchall()
    finally:
        source.close()
    target = sqlite.connect(copy, timeout)
    try:
        target.execute("BEGIN IMMEDIATE")
        target.executemany("INSERT OR REPLACE INTO resource_locks (resource, owner, priority, acquired_at, "
                           "expires_at) VALUES (?, ?, ?, ?, ?)", rows)
        target.execute("COMMIT")
    finally:
        target.close()


def _known_revision(revision: str) -> bool:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from orch.storage.migrate import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for a revision it has never heard of
        return False


def _migrate_copy(copy: Path) -> None:
    from orch.storage.migrate import upgrade

    try:
        upgrade(DatabaseSettings(url=f"sqlite:///{copy}"))
    except Exception as exc:  # noqa: BLE001 - any failure refuses the backup, with its reason
        raise BackupError(f"migrating the backup's schema failed ({exc}); refusing it, nothing was changed") from None
    finally:
        dispose_engines()
