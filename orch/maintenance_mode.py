"""Maintenance mode as a run-time switch: on or off for every API replica and worker without a restart.

The switch is a ``runtime_switches`` row, so all processes on one database agree. Each process reads it
at most once per :data:`CACHE_SECONDS` (1 s): the API's write path and every notification ask for it, and
a read per request would cost more than the request. A change made through this process is seen here at
once; other processes follow within the second.

``MAINTENANCE_MODE=true`` (``features.maintenance_mode``) still forces it on in the process that was
started with it, whatever the row says (``forced_by_env``); turning it off there means a restart without
the variable, so asking to turn it off answers :class:`ForcedByEnvironment`.

What it does: the API answers every change with 503 (logins and this switch excepted), self-healing
pauses and every notification says so. Dispatchers keep running what is already queued.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from orch.audit import Caller, record_audit
from orch.errors import OrchError
from orch.logging_config import get_logger
from orch.storage.engine import StorageError, session_scope
from orch.storage.models import RuntimeSwitch
from orch.storage.types import utcnow

if TYPE_CHECKING:
    from orch.config.schema import Settings

log = get_logger(__name__)
NAME = "maintenance_mode"
CACHE_SECONDS = 1.0
ENV_REASON = "MAINTENANCE_MODE=true in this process's environment"
MAX_REASON = 500


class ForcedByEnvironment(OrchError):
    """Maintenance mode cannot be turned off here: this process's environment forces it on."""

    status_code = 409


class Switch:
    """One process's (or one app's) view of the switch, read from the database at most once per
    ``CACHE_SECONDS`` of ``clock`` (monotonic; a test passes its own to age the cache without sleeping)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, Any] | None = None
        self._read_at = 0.0

    def cached(self) -> dict[str, Any] | None:
        """The state if read less than ``CACHE_SECONDS`` ago, else None (without touching the database):
        for the API's event loop, which reads the database in a thread only when this is None."""
        with self._lock:
            if self._state is not None and self.clock() - self._read_at < CACHE_SECONDS:
                return self._state
            return None

    def state(self) -> dict[str, Any]:
        """``{"on", "since", "by", "reason", "forced_by_env"}``, at most ``CACHE_SECONDS`` old.

        A database that cannot be read leaves the last state known (off if none): a notification about
        that very outage must still go out, and an API write would fail on the database anyway.
        """
        current = self.cached()
        if current is not None:
            return current
        try:
            with session_scope(self.settings.database) as session:
                row = session.get(RuntimeSwitch, NAME)
                current = self._view(row)
        except (SQLAlchemyError, StorageError) as exc:
            log.warning("maintenance mode: cannot read the switch (%s); keeping the last state known",
                        type(exc).__name__, extra={"event_type": "maintenance_mode.unreadable"})
            current = self._state or self._view(None)
        self._remember(current)
        return current

    def is_on(self) -> bool:
        return bool(self.state()["on"])

    def set(self, on: bool, actor: str, reason: str = "", caller: Caller | None = None) -> dict[str, Any]:
        """Turn it on or off for every process, audited in the same transaction; returns the new state."""
        if len(reason) > MAX_REASON:
            raise OrchError(f"reason is longer than {MAX_REASON} characters")
        if not on and self.settings.features.maintenance_mode:
            raise ForcedByEnvironment(
                "maintenance mode is forced on by MAINTENANCE_MODE=true (features.maintenance_mode) in this "
                "process's environment; restart it without that setting to turn maintenance mode off")
        try:
            current = self._write(on, actor, reason, caller)
        except IntegrityError:  # another process created the row at the same moment: it exists now
            current = self._write(on, actor, reason, caller)
        self._remember(current)
        return current

    def _write(self, on: bool, actor: str, reason: str, caller: Caller | None) -> dict[str, Any]:
        with session_scope(self.settings.database, write_lock=True) as session:
            row = session.get(RuntimeSwitch, NAME, with_for_update=True)
            was = bool(row and row.value)
            if row is None:
                row = RuntimeSwitch(name=NAME)
                session.add(row)
            row.value, row.since, row.changed_by, row.reason = on, utcnow(), actor[:128], reason
            session.flush()
            record_audit(session, actor=actor, action=f"maintenance_mode.{'on' if on else 'off'}",
                         resource="maintenance_mode", resource_id=NAME,
                         ip_address=caller and caller.ip_address, user_agent=caller and caller.user_agent,
                         details={"reason": reason, "was": "on" if was else "off"})
            return self._view(row)

    def _view(self, row: RuntimeSwitch | None) -> dict[str, Any]:
        forced = self.settings.features.maintenance_mode
        stored_on = bool(row and row.value)
        if row is not None and (stored_on or not forced):
            return {"on": stored_on or forced, "since": row.since.isoformat(), "by": row.changed_by,
                    "reason": row.reason, "forced_by_env": forced}
        if forced:
            return {"on": True, "since": None, "by": "MAINTENANCE_MODE", "reason": ENV_REASON, "forced_by_env": True}
        return {"on": False, "since": None, "by": None, "reason": "", "forced_by_env": False}

    def _remember(self, current: dict[str, Any]) -> None:
        with self._lock:
            self._state, self._read_at = current, self.clock()


_switches: dict[str, Switch] = {}
_guard = threading.Lock()


def switch_for(settings: Settings) -> Switch:
    """This process's switch for ``settings``' database (one per database URL and environment setting)."""
    key = f"{settings.database.url}|{settings.features.maintenance_mode}"
    with _guard:
        found = _switches.get(key)
        if found is None:
            found = _switches[key] = Switch(settings)
        return found


def for_app(app: Any) -> Switch:
    """The API app's own switch (``app.state.maintenance_switch``): its maintenance middleware and its
    ``/maintenance-mode`` routes share it, so a change made through this replica applies here at once."""
    found = getattr(app.state, "maintenance_switch", None)
    if found is None:
        found = app.state.maintenance_switch = Switch(app.state.settings)
    return found


def is_on(settings: Settings) -> bool:
    """Whether maintenance mode is on, as this process last read it (at most 1 s ago)."""
    return switch_for(settings).is_on()


def state(settings: Settings) -> dict[str, Any]:
    """``{"on", "since" (ISO or None), "by", "reason", "forced_by_env"}``, at most 1 s old."""
    return switch_for(settings).state()


def set_mode(settings: Settings, on: bool, actor: str, reason: str = "",
             caller: Caller | None = None) -> dict[str, Any]:
    """Turn maintenance mode on or off for every process on this database (audited)."""
    return switch_for(settings).set(on, actor, reason, caller)


def describe(current: dict[str, Any]) -> str:
    """Who turned it on, when and why, for a refusal or a status line."""
    if current["forced_by_env"] and current["by"] == "MAINTENANCE_MODE":
        return ENV_REASON
    said = f"turned on by {current['by']}" + (f" at {current['since']}" if current["since"] else "")
    return said + (f": {current['reason']}" if current["reason"] else "") + (
        f" (and {ENV_REASON})" if current["forced_by_env"] else "")
