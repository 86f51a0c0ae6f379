"""Backup file names, atomic publication, checksums, gzip and free-space checks.

Every file is written under a ``.partial`` name in the backup directory and renamed into place only
when complete and verified, so an interrupted or failed backup never leaves something that looks like
a backup.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from orch.config.schema import Settings
from orch.errors import OrchError

CHUNK = 4 * 1024 * 1024
PARTIAL = ".partial"
PREFIX = "orch_backup_"


class BackupError(OrchError):
    """A backup, verification or restore that cannot go on; the message says why in one line."""

    status_code = 409


class BackupVerificationFailed(BackupError):
    """The backup file itself is unsound (checksum, gzip stream, integrity, data-quality suite).

    Kept apart from other refusals (no disk space, the wrong engine, a schema this code does not know)
    because it is a verdict on the file: it is recorded in the catalog, ``backup list`` shows it, and
    ``restore latest`` skips the file for an older one. The other refusals would refuse any backup."""


def backup_dir(settings: Settings) -> Path:
    """The backup directory (``backup.directory``, default ``<data_dir>/backups``), created if missing."""
    directory = Path(settings.backup.directory or Path(settings.data_dir) / "backups")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create backup directory {directory}: {exc.strerror}") from None
    return directory


def timestamp(now: datetime | None = None) -> str:
    """The guide's ``YYYYmmdd_HHMMSS``, in UTC so names sort the same on every host."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%d_%H%M%S")


def unique_name(directory: Path, stem: str, suffix: str) -> str:
    """``stem + suffix``, or ``stem_2 + suffix`` ... when two backups start in the same second."""
    name, n = f"{stem}{suffix}", 1
    while (directory / name).exists() or (directory / f"{name}{PARTIAL}").exists():
        n += 1
        name = f"{stem}_{n}{suffix}"
    return name


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL)


@contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """A full disk (or quota) becomes one clear line instead of a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BackupError(f"disk full while writing to {where}: free space and retry "
                              f"(or prune old backups: orch backup prune)") from None
        raise


def require_free_space(directory: Path, needed: int) -> None:
    """Refuse up front when the copy cannot fit, rather than fail halfway through it."""
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise BackupError(f"not enough free space in {directory}: need about {needed // 2**20} MB, "
                          f"{free // 2**20} MB free (prune old backups: orch backup prune)")


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry is what a crash would otherwise lose."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(partial: Path, final: Path) -> None:
    """Atomically move a complete, fsynced file to its final name."""
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, final)
    fsync_dir(final.parent)


def remove_quietly(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def gzip_file(source: Path, target: Path, level: int) -> str:
    """Compress ``source`` into ``target``; returns the SHA-256 of the compressed bytes as written."""
    digest = hashlib.sha256()

    class _Hashing:
        def __init__(self, raw) -> None:  # type: ignore[no-untyped-def]
            self.raw = raw

        def write(self, data: bytes) -> int:
            digest.update(data)
            return self.raw.write(data)

        def flush(self) -> None:
            self.raw.flush()

    with (disk_errors(target), open(source, "rb") as f_in, open(target, "wb") as raw,
          gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=_Hashing(raw),  # type: ignore[arg-type]
                        mtime=0) as f_out):
        shutil.copyfileobj(f_in, f_out, CHUNK)
    return digest.hexdigest()


def gunzip_file(source: Path, target: Path) -> str:
    """Decompress, returning the SHA-256 of the compressed bytes (one read serves both); a truncated or
    bit-flipped archive becomes one clear refusal."""
    digest = hashlib.sha256()

    class _Hashing:
        def __init__(self, raw) -> None:  # type: ignore[no-untyped-def]
            self.raw = raw

        def read(self, size: int = -1) -> bytes:
            data = self.raw.read(size)
            digest.update(data)
            return data

    try:
        with (disk_errors(target), open(source, "rb") as raw, open(target, "wb") as f_out,
              gzip.GzipFile(fileobj=_Hashing(raw), mode="rb") as f_in):  # type: ignore[arg-type]
            shutil.copyfileobj(f_in, f_out, CHUNK)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # The reason by kind, never the exception's text: BadGzipFile's quotes the file's first bytes.
        why = {EOFError: "it ends early", gzip.BadGzipFile: "it is not gzip data"}.get(type(exc), "its data is corrupt")
        raise BackupVerificationFailed(f"{source.name} is corrupt or truncated ({why}); refusing it") from None
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sql_identifier(name: str) -> str:
    """``name`` for use inside double quotes in SQL: table names read from a backup are untrusted."""
    return name.replace('"', '""')
