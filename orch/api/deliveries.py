"""The record of accepted webhook deliveries, written in group commits.

A delivery's digest is stored before its effect, so a replay is refused on every API replica (the
primary key). Writing each delivery in its own transaction cost a thread hand-off, a write turn and
a commit per event; at 1,000 events/s that was a quarter of the API's CPU. Deliveries that arrive
while a write is under way now wait for the next one, and each write stores all of them in one
transaction: ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` tells which were new, so one replay in
a batch refuses that delivery only. Nothing is acknowledged before its commit.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite

from orch.config.schema import DatabaseSettings
from orch.storage.engine import connection_scope, get_engine
from orch.storage.models import WebhookDelivery
from orch.storage.types import utcnow

PURGE_EVERY_SECONDS = 60
_TABLE = WebhookDelivery.__table__
MAX_BATCH = 500  # deliveries per transaction; more wait for the next


class DeliveryLog:
    """Remembers deliveries for one app (one event loop); safe for any number of concurrent requests."""

    def __init__(self, database: DatabaseSettings, tolerance_seconds: int) -> None:
        self._database = database
        self._keep = timedelta(seconds=2 * tolerance_seconds)  # older ones are refused as stale anyway
        self._pending: list[tuple[str, str, datetime, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        dialect = get_engine(database).dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self._insert = insert(_TABLE).on_conflict_do_nothing(index_elements=["signature"]) \
            .returning(_TABLE.c.signature)

    async def remember(self, digest: str, event: str) -> bool:
        """Store the delivery; False when it was stored before (a replay). Database errors propagate."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((digest, event, utcnow(), future))
        if self._writer is None or self._writer.get_loop() is not loop:  # a test client's loop may be gone
            self._writer = asyncio.create_task(self._write_pending())
        return await future

    async def forget(self, digest: str) -> None:
        """Remove a delivery whose effect was refused, so the sender may send it again."""
        await run_in_threadpool(self._forget, digest)

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    stored = await run_in_threadpool(self._store, [(d, e, t) for d, e, t, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter gets the database's error
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for digest, _, _, future in batch:
                    if not future.done():  # a waiter that was cancelled (client gone) has no answer
                        future.set_result(digest in stored)
                        stored.discard(digest)  # the same delivery twice in one batch: the second is a replay
        finally:
            self._writer = None

    def _store(self, rows: list[tuple[str, str, datetime]]) -> set[str]:
        with connection_scope(self._database, write_lock=True) as connection:
            self._purge_if_due(connection, rows[0][2])
            result = connection.execute(self._insert, [{"signature": d, "event": e, "received_at": t}
                                                       for d, e, t in rows])
            return set(result.scalars())

    def _purge_if_due(self, connection: Connection, now: datetime) -> None:
        if time.monotonic() - self._last_purge > PURGE_EVERY_SECONDS:
            self._last_purge = time.monotonic()
            connection.execute(delete(WebhookDelivery).where(WebhookDelivery.received_at < now - self._keep))

    def _forget(self, digest: str) -> None:
        with connection_scope(self._database, write_lock=True) as connection:
            connection.execute(delete(WebhookDelivery).where(WebhookDelivery.signature == digest))
