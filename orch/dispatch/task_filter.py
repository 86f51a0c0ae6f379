"""Which tasks a listing or a bulk change is about, and the opaque cursor that pages through them.

One filter serves ``GET /tasks``, ``POST /tasks/bulk``, ``orch tasks list`` and the console, so each
reads the same tasks for the same question. Pages are keyset pages over ``(created_at desc, task_id)``:
the cursor is the last row's key, so page 10 000 costs what page 1 costs and a task added meanwhile
neither repeats nor skips a row.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_

from orch.dispatch.errors import InvalidRequest
from orch.storage.models import TASK_STATUSES, Task

MAX_CURSOR = 200  # a real cursor is ~90 characters; anything far longer is not one of ours


@dataclass(frozen=True)
class TaskFilter:
    status: str | None = None  # one of orch.storage.models.TASK_STATUSES
    core_id: str | None = None
    action: str | None = None
    owner: str | None = None
    since: datetime | None = None  # created_at >= since (aware UTC)
    until: datetime | None = None  # created_at < until

    def problems(self) -> list[str]:
        """What makes the filter unusable, one line per field (empty when it is fine)."""
        out = []
        if self.status is not None and self.status not in TASK_STATUSES:
            out.append(f"status: must be one of {', '.join(TASK_STATUSES)}, not {self.status!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                out.append(f"{name}: must carry a time zone (e.g. 2026-01-31T00:00:00Z)")
        return out

    def apply(self, query: Select) -> Select:  # type: ignore[type-arg]
        """``query`` narrowed to the matching tasks; raises :class:`InvalidRequest` for an unusable filter."""
        problems = self.problems()
        if problems:
            raise InvalidRequest(problems)
        for column, value in ((Task.status, self.status), (Task.core_id, self.core_id),
                              (Task.action, self.action), (Task.owner, self.owner)):
            if value is not None:
                query = query.where(column == value)
        if self.since is not None:
            query = query.where(Task.created_at >= self.since)
        if self.until is not None:
            query = query.where(Task.created_at < self.until)
        return query


def encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The key a cursor names; :class:`InvalidRequest` for anything :func:`encode_cursor` did not make."""
    bad = InvalidRequest([f"cursor: not a cursor this API returned ({cursor[:40]!r}); start again without it"])
    if not cursor or len(cursor) > MAX_CURSOR:
        raise bad
    try:
        created, task_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(task_id, str) or not 0 < len(task_id) <= 36 or when.tzinfo is None:
        raise bad
    return when, task_id


def after(cursor: str | None) -> list:  # type: ignore[type-arg]
    """The keyset condition for the rows after ``cursor`` in ``(created_at desc, task_id)`` order.

    Written as a range on ``created_at`` plus the tie-break, so both databases walk an index that starts
    with ``created_at`` (after the status or core column when that is filtered) from the cursor on."""
    if cursor is None:
        return []
    created_at, task_id = decode_cursor(cursor)
    return [Task.created_at <= created_at,
            or_(Task.created_at < created_at, and_(Task.created_at == created_at, Task.task_id > task_id))]
