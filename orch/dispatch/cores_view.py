"""The cores at a glance (``GET /cores``, ``orch cores list``, the console): limit, load, reservation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from orch.config.schema import Settings
from orch.dispatch.core_load import loads
from orch.dispatch.queue import TaskQueue
from orch.dispatch.reservations import known_cores, reservation_view
from orch.storage.engine import session_scope
from orch.storage.models import CoreReservation
from orch.storage.types import clock_of_record


def cores_overview(settings: Settings, only: str | None = None) -> list[dict[str, Any]]:
    """One dict per configured core and per core that has tasks or a reservation, sorted by core id
    (``only``: just that core, which need not be known). An expired reservation counts as none, as
    dispatch counts it."""
    queue = TaskQueue(settings)
    with session_scope(settings.database) as session:
        cores = [only] if only is not None else known_cores(session, settings)
        counts = loads(session.connection(), None if only is None else [only])  # kept by the database
        now = clock_of_record(session)
        reserved = {r.core_id: reservation_view(r) for r in session.scalars(
            select(CoreReservation).where(CoreReservation.expires_at > now))}
        return [{"core_id": core, "concurrency": queue.core_limit(core), "running": counts.get(core, (0, 0))[1],
                 "queued": counts.get(core, (0, 0))[0], "reservation": reserved.get(core)} for core in cores]
