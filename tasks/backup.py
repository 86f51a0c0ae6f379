"""Backup and restore tasks. Only the steps that can safely run twice are retried: a copy that fails
is removed and taken again, but a verification that failed is a verdict, not a hiccup."""

from __future__ import annotations

from typing import Any

from prefect import task

from orch.backup import create, restore, retention
from orch.backup.create import Snapshot
from orch.config.runtime import get_settings
from tasks.db import RETRIES


@task(name="sweep-partial-backups", **RETRIES)
def sweep_partials() -> list[str]:
    """Remove what an interrupted backup left behind."""
    return create.sweep_partials(get_settings())


@task(name="snapshot-database", **RETRIES)
def snapshot(kind: str) -> Snapshot:
    """Copy the live database while it runs (SQLite backup API, or pg_dump -Fc)."""
    return create.snapshot(get_settings(), kind)


@task(name="verify-backup")
def verify(snap: Snapshot) -> dict[str, Any]:
    """gzip + SHA-256, integrity check and the data-quality suite on the copy (PostgreSQL: on a scratch
    restore). Failure removes the copy: nothing reaches the catalog."""
    return create.verify(get_settings(), snap)


@task(name="publish-backup")
def publish(snap: Snapshot, entry: dict[str, Any]) -> dict[str, Any]:
    """Atomic rename into data/backups and the catalog entry (plus the full backup's extras)."""
    return create.publish(get_settings(), snap, entry)


@task(name="apply-retention", **RETRIES)
def apply_retention(dry_run: bool = False) -> dict[str, Any]:
    """Remove backups past retention, keeping the newest verified ones."""
    return retention.prune(get_settings(), dry_run=dry_run)


@task(name="check-backup")
def check_backup(ref: str) -> restore.Candidate:
    """Checksum, decompress, integrity, data quality, and migrate the copy: before the live database."""
    return restore.check(get_settings(), ref, migrate=True)


@task(name="swap-in-backup")
def swap_in(candidate: restore.Candidate, owner: str) -> dict[str, Any]:
    """Pause dispatch, keep a pre-restore copy, replace the live data; roll back if anything fails."""
    try:
        return restore.swap(get_settings(), candidate, owner)
    finally:
        restore.discard(candidate)
