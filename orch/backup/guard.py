"""The locks a backup, restore or maintenance holds while it works.

``orch:database`` keeps them from overlapping (a restore swapping the data under a running backup, a
VACUUM during a copy). ``orch:dispatch-paused`` is held only by a restore: the dispatcher claims nothing
while it is held (``TaskQueue.claim``), so no task starts against a database being replaced.

Both are ORCH resource locks, so they live in the database they protect, and a restore replaces that
database: the restored data does not have them. :class:`Held` therefore renews by re-taking a lock that
vanished, and a restore calls :meth:`Held.reassert` right after its swap. Every lock has a TTL, so a
holder that dies frees it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from orch.backup.files import BackupError
from orch.config.schema import Settings
from orch.dispatch.errors import DispatchError
from orch.dispatch.locks import LockManager, LockNotHeld, LockTimeout
from orch.dispatch.ordering import Priority
from orch.dispatch.queue import DISPATCH_PAUSE_LOCK
from orch.logging_config import get_logger
from orch.storage.engine import describe_error, safe_url
from orch.storage.health import database_file_exists

DATABASE_LOCK = "orch:database"
TTL = 60.0
log = get_logger(__name__)


class LockUnavailable(BackupError):
    """The locks cannot be recorded: the database is missing, uninitialised, busy or damaged."""

    status_code = 503


class Held:
    """Locks taken for one operation, renewed in the background until :meth:`release`."""

    def __init__(self, settings: Settings, owner: str, resources: list[str]) -> None:
        self.manager = LockManager(settings)
        self.owner, self.resources, self.timeout = owner, resources, settings.backup.lock_timeout
        self._done = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lock-renew:{owner}", daemon=True)

    def acquire(self) -> None:
        database = self.manager.database
        if not database_file_exists(database):  # connecting would create an empty file
            raise LockUnavailable(f"database file of {safe_url(database.url or '')} not found (run: orch db init)")
        taken: list[str] = []
        try:
            for resource in self.resources:
                self.manager.acquire(resource, self.owner, ttl=TTL, priority=Priority.HIGH, timeout=self.timeout)
                taken.append(resource)
        except LockTimeout as exc:
            for resource in taken:
                self.manager.release(resource, self.owner)
            raise BackupError(f"{exc}; another backup, restore or maintenance is running") from None
        except SQLAlchemyError as exc:
            hint = " (run: orch db init)" if "no such table" in str(exc) or "does not exist" in str(exc) else ""
            raise LockUnavailable(f"cannot take the {', '.join(self.resources)} lock: "
                                  f"{describe_error(exc, database.url or '')}{hint}") from None
        self._renewer.start()

    def reassert(self, *, take_over: bool = False) -> None:
        """Take back every lock the data under us lost. ``take_over`` (right after a restore) also
        replaces rows the restored data brought with it: they record holders from the backup's time
        (the backup's own ``orch:database``), and nobody holds them now, since we held them before."""
        for resource in self.resources:
            try:
                self.manager.extend(resource, self.owner, TTL)
            except LockNotHeld:
                if take_over:
                    self.manager.release(resource)
                with contextlib.suppress(LockTimeout):
                    self.manager.acquire(resource, self.owner, ttl=TTL, priority=Priority.HIGH, timeout=0)

    def _renew(self) -> None:
        while not self._done.wait(TTL / 3):
            try:
                self.reassert()
            except SQLAlchemyError as exc:  # the database is being swapped; the next round retries
                log.warning("lock renewal for %s failed: %s", self.owner, exc)

    def release(self) -> None:
        self._done.set()
        if self._renewer.is_alive():
            self._renewer.join()
        for resource in self.resources:
            with contextlib.suppress(DispatchError, SQLAlchemyError):  # gone with the old data, or expired
                self.manager.release(resource, self.owner)


@contextmanager
def holding(settings: Settings, owner: str, *resources: str) -> Iterator[Held]:
    held = Held(settings, owner, list(resources))
    held.acquire()
    try:
        yield held
    finally:
        held.release()


@contextmanager
def database_lock(settings: Settings, owner: str) -> Iterator[Held]:
    """What a backup and maintenance hold: no restore or other maintenance meanwhile."""
    with holding(settings, owner, DATABASE_LOCK) as held:
        yield held


def restore_locks(settings: Settings, owner: str) -> contextlib.AbstractContextManager[Held]:
    """What a restore holds: the database lock, and the pause that stops claims."""
    return holding(settings, owner, DATABASE_LOCK, DISPATCH_PAUSE_LOCK)
