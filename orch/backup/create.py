"""Create a backup: snapshot, verify, publish. A backup that is not verified never reaches the catalog.

The three steps are separate so the ``backup`` flow runs each as a retryable Prefect task; the CLI runs
:func:`create_backup`, which calls the same three. Until :func:`publish` renames it, every file is a
``.partial`` one, and any failure removes what the step wrote.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orch.backup import postgres, sqlite
from orch.backup.catalog import Catalog
from orch.backup.files import (
    PARTIAL,
    PREFIX,
    BackupError,
    backup_dir,
    disk_errors,
    gzip_file,
    partial_path,
    remove_quietly,
    require_free_space,
    sha256_file,
    timestamp,
    unique_name,
)
from orch.backup.files import publish as publish_file
from orch.backup.validation import describe_failure, validate
from orch.config.schema import Settings
from orch.storage.engine import is_sqlite, safe_url

KINDS = ("daily", "full", "manual")


@dataclass
class Snapshot:
    """A copy taken but not yet verified: only ``.partial`` files."""

    engine: str
    kind: str
    final: str                      # the name it will have once published
    partial: str                    # the file that becomes ``final``
    copy: str | None = None         # SQLite: the uncompressed copy that is checked, then removed
    started: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sweep_partials(settings: Settings) -> list[str]:
    """Remove what an interrupted backup left (called under the database lock, so none is in progress)."""
    directory = backup_dir(settings)
    stale = [p for p in directory.iterdir() if p.name.startswith(PREFIX) and PARTIAL in p.name]
    remove_quietly(*stale)
    return [p.name for p in stale]


def snapshot(settings: Settings, kind: str = "daily") -> Snapshot:
    """Copy the live database while it keeps running (SQLite backup API / ``pg_dump -Fc``)."""
    if kind not in KINDS:
        raise BackupError(f"backup kind must be one of {', '.join(KINDS)}, not {kind!r}")
    url = settings.database.url or ""
    directory = backup_dir(settings)
    stamp = timestamp()
    if is_sqlite(url):
        source = sqlite.sqlite_path(url)
        if not source.exists():
            raise BackupError(f"database file {source} not found (run: orch db init)")
        wal = source.with_name(source.name + "-wal")
        size = source.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        require_free_space(directory, int(size * 1.6))  # the copy plus its compressed form
        final = unique_name(directory, f"{PREFIX}{stamp}", ".db.gz")
        copy = directory / f"{final[:-3]}{PARTIAL}"
        try:
            sqlite.copy(source, copy, settings.database.timeout)
        except BaseException:
            sqlite.remove_files(copy)
            raise
        return Snapshot("sqlite", kind, final, str(partial_path(directory / final)), str(copy))
    final = unique_name(directory, f"{PREFIX}{stamp}", ".dump")
    partial = partial_path(directory / final)
    try:
        with disk_errors(partial):
            postgres.dump(settings, url, partial)
    except BaseException:
        remove_quietly(partial)
        raise
    return Snapshot("postgresql", kind, final, str(partial))


def verify(settings: Settings, snap: Snapshot) -> dict[str, Any]:
    """Compress and checksum the copy, check its integrity and run the data-quality suite on it.

    Returns the catalog entry to publish; raises (after removing the snapshot) when anything fails.
    """
    try:
        if snap.engine == "sqlite":
            assert snap.copy is not None
            copy = Path(snap.copy)
            with ThreadPoolExecutor(1) as pool:  # compress while checking: zlib and sqlite release the GIL
                compressed = pool.submit(gzip_file, copy, Path(snap.partial), settings.backup.compression_level)
                facts = check_sqlite_copy(copy, settings.database.timeout)
                checksum = compressed.result()
            sqlite.remove_files(copy)
        else:
            facts = verify_dump(settings, Path(snap.partial))
            checksum = sha256_file(Path(snap.partial))
        if not facts["validation"]["success"]:
            raise BackupError(describe_failure(facts["validation"]) + "; backup not kept")
    except BaseException:
        discard(snap)
        raise
    return {
        "file": snap.final, "engine": snap.engine, "kind": snap.kind,
        "created_at": datetime.fromtimestamp(snap.started, timezone.utc).isoformat(),
        "size_bytes": Path(snap.partial).stat().st_size, "sha256": checksum,
        "source": safe_url(settings.database.url or ""), "schema_revision": facts["schema_revision"],
        "row_counts": facts["row_counts"], "integrity": facts["integrity"], "validation": facts["validation"],
        "verified": True, "verified_at": datetime.now(timezone.utc).isoformat(),
        "duration_seconds": round(time.time() - snap.started, 3),
    }


def check_sqlite_copy(copy: Path, timeout: float) -> dict[str, Any]:
    """Integrity check, then the data-quality suite, of a copy. One after the other: run side by side on
    this project's two shared cores they took longer than in sequence (docs/benchmarks.md, "Backup and restore")."""
    facts = sqlite.inspect(copy, timeout)
    _require_sound(facts)  # a damaged copy: its integrity is the reason, not whatever the suite would say
    facts["validation"] = validate(f"sqlite:///{copy}", sqlite.tables(copy, timeout))
    return facts


def verify_dump(settings: Settings, dump: Path) -> dict[str, Any]:
    """Restore a ``pg_dump -Fc`` file into a scratch database and check it there."""
    with postgres.scratch_database(settings.database.url or "") as scratch:
        postgres.restore(settings, scratch, dump)
        facts = postgres.inspect(scratch)
        _require_sound(facts)
        facts["validation"] = validate(scratch, set(facts["row_counts"]))
        from orch.storage.engine import dispose_engines

        dispose_engines()  # GE's engine aside, nothing of ours may keep the scratch database open
    return facts


def publish(settings: Settings, snap: Snapshot, entry: dict[str, Any]) -> dict[str, Any]:
    """Rename the verified file into place, then record it; with no catalog entry, no file either."""
    directory = backup_dir(settings)
    final = directory / snap.final
    try:
        publish_file(Path(snap.partial), final)
        if snap.kind == "full":
            entry["extras"] = full_backup_extras(settings, final)
        Catalog(directory).add(entry)
    except BaseException:
        discard(snap)
        remove_quietly(final, *([directory / entry["extras"]["file"]] if "extras" in entry else []))
        raise
    return entry


def create_backup(settings: Settings, kind: str = "manual") -> dict[str, Any]:
    """The whole procedure for the CLI and scripts; the ``backup`` flow runs the same steps as tasks."""
    from orch.backup.guard import database_lock

    with database_lock(settings, f"backup:{kind}"):
        sweep_partials(settings)
        snap = snapshot(settings, kind)
        entry = verify(settings, snap)
        return publish(settings, snap, entry)


def full_backup_extras(settings: Settings, database_backup: Path) -> dict[str, Any]:
    """The weekly full backup's other half: the embedded Prefect server's database, the configuration
    without secrets and the SBOM evidence, in ``<name>.extras.tar.gz`` beside the database backup."""
    directory = database_backup.parent
    name = database_backup.name.split(".")[0] + ".extras.tar.gz"
    partial = partial_path(directory / name)
    contents: list[str] = []
    staging = directory / f"{name}.staging{PARTIAL}"
    try:
        level = settings.backup.compression_level
        with disk_errors(partial), tarfile.open(partial, "w:gz", compresslevel=level) as tar:
            prefect_db = Path(settings.data_dir) / "prefect" / "prefect.db"
            if settings.prefect.api_url is None and prefect_db.exists():
                sqlite.copy(prefect_db, staging, settings.database.timeout)
                tar.add(staging, arcname="prefect/prefect.db")
                contents.append("prefect/prefect.db")
            config = settings.model_dump(mode="json")  # SecretStr fields dump as "**********"
            config["database"]["url"] = safe_url(settings.database.url or "")
            data = json.dumps(config, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo("config/settings.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            contents.append("config/settings.json")
            for evidence in sbom_evidence(settings):
                tar.add(evidence, arcname=f"sbom/{evidence.name}")
                contents.append(f"sbom/{evidence.name}")
        publish_file(partial, directory / name)
    finally:
        sqlite.remove_files(staging)
        remove_quietly(partial)
    return {"file": name, "sha256": sha256_file(directory / name), "size_bytes": (directory / name).stat().st_size,
            "contents": contents}


def sbom_evidence(settings: Settings) -> list[Path]:
    """The SBOM, its signature and the public key beside it; never the signing key in ``keys_dir``."""
    from orch.supply_chain.paths import SbomPaths

    paths = SbomPaths.from_settings(settings.supply_chain)
    candidates = [paths.sbom, paths.signature, paths.sbom.with_name(paths.sbom.stem + ".pub.pem")]
    return [path for path in candidates if path.is_file()]


def discard(snap: Snapshot) -> None:
    remove_quietly(Path(snap.partial))
    if snap.copy:
        sqlite.remove_files(Path(snap.copy))


def _require_sound(facts: dict[str, Any]) -> None:
    if facts["integrity"] != "ok":
        raise BackupError(f"integrity check of the copy failed: {facts['integrity']}")
    if facts["schema_revision"] is None:
        raise BackupError("the copy has no schema revision (is the database initialised? run: orch db init)")
