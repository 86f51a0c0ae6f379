"""The backup catalog: ``catalog.json`` beside the backups, one entry per backup that passed verification
when it was made, with the outcome of its latest verification since.

It lives outside the database it describes, so a corrupt database cannot take its own backup list with
it. Writers take an exclusive ``flock`` on ``catalog.lock`` and replace the file atomically (write,
fsync, rename), so concurrent backups never lose each other's entries and a crash leaves the old or the
new catalog, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orch.backup.files import BackupError, fsync_dir

CATALOG = "catalog.json"
FORMAT = 1


class Catalog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / CATALOG

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first."""
        return self._read()["backups"]

    def find(self, name: str) -> dict[str, Any] | None:
        return next((entry for entry in self.entries() if entry["file"] == name), None)

    def newest_verified(self, engine: str) -> dict[str, Any] | None:
        """The newest entry whose file is still there and whose last verification passed."""
        for entry in reversed(self.entries()):
            if entry.get("verified") and entry["engine"] == engine and (self.directory / entry["file"]).exists():
                return entry
        return None

    def record_verification(self, name: str, at: str, failure: str | None = None) -> None:
        """Remember the outcome of verifying ``name`` again (``backup verify``, every restore's check).

        ``verified`` then means "passed its last verification", so a backup found corrupt after it was
        cataloged stops counting as one: ``restore latest`` and recovery pass over it, retention no
        longer keeps it among the newest verified, and ``backup list`` shows why. Nothing happens for a
        name that is not in the catalog."""
        def change(backups: list[dict[str, Any]]) -> list[dict[str, Any]]:
            for entry in backups:
                if entry["file"] == name:
                    entry["verified"] = failure is None
                    if failure is None:
                        entry["verified_at"] = at
                        entry.pop("verification_failed", None)
                    else:
                        entry["verification_failed"] = {"at": at, "reason": failure}
            return backups

        if self.find(name) is not None:
            self._update(change)

    def uncataloged(self) -> list[str]:
        """Backup files in the directory the catalog does not know (copied in by hand, or left by an
        older version): never verified, so only a named restore will try them."""
        known = {entry["file"] for entry in self.entries()}
        return sorted(p.name for p in self.directory.iterdir()
                      if p.is_file() and p.name.endswith((".db.gz", ".dump")) and p.name not in known)

    def add(self, entry: dict[str, Any]) -> None:
        self._update(lambda backups: [*[e for e in backups if e["file"] != entry["file"]], entry])

    def remove(self, names: set[str]) -> None:
        self._update(lambda backups: [e for e in backups if e["file"] not in names])

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / "catalog.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"format": FORMAT, "backups": []}
        except (OSError, ValueError) as exc:
            raise BackupError(f"backup catalog {self.path} is unreadable ({exc}); fix or move it aside") from None
        if not isinstance(data, dict) or not isinstance(data.get("backups"), list):
            raise BackupError(f"backup catalog {self.path} is not an ORCH catalog; fix or move it aside")
        return data

    def _update(self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
        with self._locked():
            data = self._read()
            data["backups"] = sorted(change(data["backups"]), key=lambda e: (e["created_at"], e["file"]))
            partial = self.path.with_name(CATALOG + ".partial")
            with open(partial, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, self.path)
            fsync_dir(self.directory)


def verification_status(entry: dict[str, Any] | None) -> str:
    """One phrase for ``backup list``: ``verified <when>``, ``FAILED <when>: <why>`` or ``never verified``."""
    if entry is None:
        return "never verified (not in the catalog)"
    failed = entry.get("verification_failed")
    if not entry.get("verified") and failed:
        return f"FAILED {str(failed['at'])[:19]}: {failed['reason']}"
    if entry.get("verified"):
        return f"verified {str(entry.get('verified_at') or entry['created_at'])[:19]}"
    return "never verified"
