"""Server-Sent Events: one poller per API process fans database events out to every open stream.

Why poll the database: task events are written by dispatchers and cores in other processes (and on
other hosts), and alert events by monitoring sweeps; the database is the one place all of them meet,
so any API replica can serve any client. One query per ``api.sse_poll_seconds`` per process serves
every client, and the poller sleeps while nobody listens.

Resuming: each message's ``id`` is the cursor ``<task event id>.<alert event id>`` after it, so a
client reconnecting with ``Last-Event-ID`` gets exactly what it missed from both streams, from the
database, before live events continue.

Frames: every frame of ORCH's streams (this one and ``/events/health``) is written by FastAPI's own SSE
encoder (:func:`fastapi.sse.format_sse_event`, what it uses for ``ServerSentEvent``), never by hand. Not its
generator endpoints (``response_class=EventSourceResponse`` with ``yield``): they encode each event once per
stream and run two extra tasks per stream, where one event fans out to thousands of streams here, and their
keep-alive is a fixed 15 s, where ours is ``api.sse_heartbeat_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.sse import EventSourceResponse, format_sse_event
from sqlalchemy import func, select
from starlette.types import Receive, Scope, Send

from orch.config.schema import Settings
from orch.logging_config import get_logger
from orch.redaction import redact_structure
from orch.storage.engine import session_scope
from orch.storage.models import AlertEvent, Task, TaskEvent

log = get_logger(__name__)
REPLAY_LIMIT = 1000  # events a resuming client is sent from the database at most
QUEUE_SIZE = 1000  # a client this far behind is disconnected (it can resume with Last-Event-ID)
_CURSOR = re.compile(r"^(\d{1,18})\.(\d{1,18})$")
RETRY_HINT = format_sse_event(retry=3000)  # a client reconnects after 3 s (with Last-Event-ID)
KEEP_ALIVE = format_sse_event(comment="keep-alive")  # keeps proxies from closing a quiet stream
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no caching, no proxy buffering


@dataclass(frozen=True)
class Event:
    kind: str  # "task" or "alert"
    name: str  # SSE event name: task.started, alert.firing, ...
    cursor: tuple[int, int]
    core_id: str | None
    payload: dict[str, Any]

    @cached_property
    def wire(self) -> bytes:
        """The SSE frame, built once however many streams it goes to, masked by the same rule as every API
        response (``redact_structure``), so the stream and ``/jobs/{id}/events`` agree."""
        data = json.dumps(redact_structure(self.payload), default=str, separators=(",", ":"))
        return format_sse_event(data_str=data, event=self.name, id=f"{self.cursor[0]}.{self.cursor[1]}")


def parse_cursor(value: str | None) -> tuple[int, int] | None:
    """``Last-Event-ID`` as a cursor; None when absent or not one of ours (then: live events only)."""
    match = _CURSOR.match(value.strip()) if value else None
    return (int(match[1]), int(match[2])) if match else None


@dataclass(eq=False)
class Subscriber:
    accepts: Callable[[Event], bool]
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class EventHub:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subscribers: set[Subscriber] = set()
        self.cursor: tuple[int, int] | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start polling in the running event loop (each app lifespan gets a fresh poller)."""
        self._wake = asyncio.Event()
        self.cursor = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="orch-sse-poller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for subscriber in list(self.subscribers):
            subscriber.queue.put_nowait(None)

    # ---- subscribing ---------------------------------------------------------------------------
    async def subscribe(self, accepts: Callable[[Event], bool], resume: tuple[int, int] | None
                        ) -> tuple[Subscriber, list[Event]]:
        """Register a stream; returns it with the events it missed since ``resume`` (oldest first)."""
        if self.cursor is None:
            self.cursor = await run_in_threadpool(self._heads)
        subscriber = Subscriber(accepts)
        self.subscribers.add(subscriber)
        if self._wake is not None:
            self._wake.set()
        missed: list[Event] = []
        if resume is not None:
            upto = self.cursor
            missed = [e for e in await run_in_threadpool(self._read, resume, upto, REPLAY_LIMIT) if accepts(e)]
        return subscriber, missed

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    # ---- polling -------------------------------------------------------------------------------
    async def _run(self) -> None:
        interval = self.settings.api.sse_poll_seconds
        while True:
            if not self.subscribers and self._wake is not None:
                self._wake.clear()
                await self._wake.wait()
            try:
                if self.cursor is None:
                    self.cursor = await run_in_threadpool(self._heads)
                events = await run_in_threadpool(self._read, self.cursor, None, 5000)
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not end every client's stream
                log.warning("SSE poll failed: %s", exc, extra={"event_type": "sse.poll_error"})
                await asyncio.sleep(max(interval, 1.0))
                continue
            for event in events:
                self.cursor = event.cursor
                for subscriber in list(self.subscribers):
                    if subscriber.accepts(event):
                        try:
                            subscriber.queue.put_nowait(event)
                        except asyncio.QueueFull:  # too slow: drop it; it may resume with Last-Event-ID
                            self.subscribers.discard(subscriber)
                            subscriber.queue = asyncio.Queue(1)
                            subscriber.queue.put_nowait(None)
            await asyncio.sleep(interval)

    def _heads(self) -> tuple[int, int]:
        with session_scope(self.settings.database) as session:
            task_head = session.scalar(select(func.max(TaskEvent.event_id))) or 0
            alert_head = session.scalar(select(func.max(AlertEvent.id))) or 0
        return int(task_head), int(alert_head)

    def _read(self, after: tuple[int, int], upto: tuple[int, int] | None, limit: int) -> list[Event]:
        """Events after ``after`` (and at most ``upto``), task events first, each with its cursor."""
        task_after, alert_after = after
        with session_scope(self.settings.database) as session:
            query = (select(TaskEvent, Task.core_id).join(Task, Task.task_id == TaskEvent.task_id)
                     .where(TaskEvent.event_id > task_after).order_by(TaskEvent.event_id).limit(limit))
            if upto is not None:
                query = query.where(TaskEvent.event_id <= upto[0])
            task_rows = session.execute(query).all()
            aquery = select(AlertEvent).where(AlertEvent.id > alert_after).order_by(AlertEvent.id).limit(limit)
            if upto is not None:
                aquery = aquery.where(AlertEvent.id <= upto[1])
            alert_rows = list(session.scalars(aquery))
            events: list[Event] = []
            position = task_after
            for row, core_id in task_rows:
                position = row.event_id
                events.append(Event("task", row.event_type, (position, alert_after), core_id, {
                    "event_id": row.event_id, "task_id": row.task_id, "core_id": core_id,
                    "event_type": row.event_type, "timestamp": row.timestamp.isoformat(), "data": row.data}))
            for row in alert_rows:
                payload = {column.name: getattr(row, column.key, None) for column in row.__table__.columns}
                payload["event_type"] = f"alert.{payload.get('state', 'update')}"
                events.append(Event("alert", payload["event_type"], (position, row.id), None, payload))
        return events


async def stream(hub: EventHub, subscriber: Subscriber, missed: list[Event], heartbeat: float,
                 on_sent: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The frames of one SSE response: a retry hint, what was missed, then live events and keep-alives."""
    try:
        yield RETRY_HINT
        for event in missed:
            yield event.wire
        on_sent(len(missed))
        while True:
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), timeout=heartbeat)
            except TimeoutError:
                yield KEEP_ALIVE
                continue
            if event is None:
                return
            yield event.wire
            on_sent(1)
    finally:
        hub.unsubscribe(subscriber)


STREAM_RETRY_AFTER = 30


class StreamSlots:
    """Open streams per key (``anonymous``, a username), capped: a stream holds a connection and a task
    for as long as the client likes, so without a cap one client could hold them by the thousand.

    Counted per API process, like the hub's subscribers; the event loop is the only writer.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def take(self, key: str) -> bool:
        """Take a slot for ``key``; False when its streams are at the limit."""
        if self.open.get(key, 0) >= self.limit:
            return False
        self.open[key] = self.open.get(key, 0) + 1
        return True

    def give_back(self, key: str) -> None:
        left = self.open.get(key, 0) - 1
        if left > 0:
            self.open[key] = left
        else:
            self.open.pop(key, None)

    def response(self, key: str, content: AsyncIterator[bytes]) -> EventSourceResponse:
        """The stream as a response that gives its slot back when the response ends, however it ends
        (a generator's ``finally`` would not run for a client gone before the first message)."""
        return _SlotResponse(content, lambda: self.give_back(key))


class _SlotResponse(EventSourceResponse):
    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, headers=SSE_HEADERS)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
