"""Queue figures for the console's overview: depth by priority, running tasks, throughput per minute.

Each figure is one indexed query whose cost follows the work in the window, not the size of the table:
depth and running counts walk ``ix_tasks_queue`` (``status, sort_key``) over the queued or running rows
only, and throughput walks ``ix_task_events_timestamp`` over the last hour's events only, so a table of
a million finished tasks costs what an empty one does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, cast, func, select

from orch.config.schema import Settings
from orch.dispatch.queue import TaskQueue
from orch.storage.engine import get_engine, session_scope
from orch.storage.models import Task, TaskEvent
from orch.storage.types import utcnow

ENDINGS = {"task.completed": "completed", "task.failed": "failed", "task.timed_out": "failed"}


def _minute(settings: Settings) -> Any:
    """The event's minute as a whole number of minutes since the epoch, in the database's own terms."""
    if get_engine(settings.database).dialect.name == "sqlite":
        return cast(func.strftime("%s", TaskEvent.timestamp), Integer) // 60
    return func.floor(func.extract("epoch", TaskEvent.timestamp) / 60)


def throughput(settings: Settings, minutes: int = 60, now: datetime | None = None) -> list[dict[str, Any]]:
    """Tasks completed and failed (timed out included) in each of the last ``minutes`` minutes, oldest
    first, every minute present (zeros included) so a chart needs no gap handling."""
    now = now or utcnow()
    end = int(now.timestamp() // 60)
    start = end - minutes + 1
    since = datetime.fromtimestamp(start * 60, tz=now.tzinfo)
    minute = _minute(settings).label("minute")
    query = (select(minute, TaskEvent.event_type, func.count())
             .where(TaskEvent.timestamp >= since, TaskEvent.event_type.in_(tuple(ENDINGS)))
             .group_by(minute, TaskEvent.event_type))
    buckets = {m: {"completed": 0, "failed": 0} for m in range(start, end + 1)}
    with session_scope(settings.database) as session:
        for at, event_type, count in session.execute(query):
            bucket = buckets.get(int(at))
            if bucket is not None:
                bucket[ENDINGS[event_type]] += int(count)
    return [{"minute": datetime.fromtimestamp(m * 60, tz=now.tzinfo).isoformat(), **counts}
            for m, counts in buckets.items()]


def queue_figures(settings: Settings) -> dict[str, Any]:
    """Queued tasks per priority (all four), their total, and how many run now."""
    depth = TaskQueue(settings).depth()
    with session_scope(settings.database) as session:
        running = session.scalar(select(func.count()).select_from(Task).where(Task.status == "running")) or 0
    return {"depth": depth, "queued": sum(depth.values()), "running": int(running)}
