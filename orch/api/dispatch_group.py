"""Dispatches written in group commits: single ``POST /dispatch`` requests and whole batches.

Each ``POST /dispatch`` used to be a transaction of its own: a thread hand-off, the write turn and a
commit per task, and on SQLite every one of them queued behind the dispatcher's claims and completions
for the one write lock. Under 32 concurrent clients that capped single dispatches near 150/s. Now
requests that arrive while a write is under way wait for the next one, and each write stores all of
them in one transaction (as webhook deliveries do, :mod:`orch.api.deliveries`): each sender's single
requests (same user, same address and user agent) go through the queue's batch path, so their tasks,
events and one audit entry naming them are written by a statement per table. A ``POST /dispatch/batch``
joins the group on SQLite as one request of many tasks, all or nothing, written by its own statements
(its own audit entry, depth check and idempotency keys) but committed with the others: SQLite has one
write turn, a batch's commit wrote each of its cores' index pages, and batches committed together write
a page they share once. On PostgreSQL a batch keeps a transaction of its own, beside the others.
What a response promises is unchanged:

- nothing is acknowledged before its commit: the answers are handed out after it;
- an idempotency key is matched against the tasks before it, those of earlier requests in the same
  group included (a key repeated in the group gets the task its first request made, ``created`` false);
- the depth limit is exact: when a group would overfill the queue its single requests go one by one,
  so exactly those above the limit are refused (429); a batch above it is refused whole; and those
  refused have written nothing;
- validation and the permission for the task's effect are the request's own, checked before it joins;
- one request's failure in the database (a row it alone makes impossible, a key another writer took
  meanwhile) does not fail the others: the group is written again with a savepoint per request, and
  only that request gets its error;
- a failure of the database itself reaches every request of the group (503), and the next group
  starts afresh.

A group starts as soon as the previous one is written: one request alone waits for nothing. What needs
no transaction (rows, events, creation records) is made before it (:mod:`orch.dispatch.new_tasks`): by a
batch's own request thread, for single requests by the writer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from orch.audit import Caller
from orch.config.schema import Settings
from orch.dispatch.core_load import FOLD_EVERY_SECONDS
from orch.dispatch.errors import QueueFull
from orch.dispatch.new_tasks import MAX_BATCH, NewTasks, prepare
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import ValidTask
from orch.storage.engine import is_sqlite, session_scope

# Tasks per transaction: a longer one would hold the write lock the dispatcher needs. A group takes
# requests in arrival order up to this (a batch is at most 100, and a request is never split).
MAX_GROUP_TASKS = 400
Accepted = tuple[dict[str, Any], bool]  # the task's view, and whether this request created it
# A statement that fails for one request's row (a unique key another writer took meanwhile, a value the
# database refuses): that request's problem. Any other database error is the database's, every request's.
_ONE_REQUESTS = (IntegrityError, DataError)


@dataclass(frozen=True)
class _Request:
    """A single dispatch (``task``), or a batch made ready by its sender (``batch``), and its answer:
    an :data:`Accepted` for a single, a list of them for a batch."""

    task: ValidTask | None
    batch: NewTasks | None
    owner: str
    caller: Caller
    answer: asyncio.Future[Any]

    @property
    def size(self) -> int:
        return 1 if self.batch is None else len(self.batch.tasks)


@dataclass(frozen=True)
class _Sender:
    """One sender's single requests of a group (same user, address and user agent), made ready before the
    transaction: one task per request, in the order of ``indexes``, their places in the group."""

    owner: str
    caller: Caller
    indexes: list[int]
    new: NewTasks


class DispatchGroup:
    """Queues dispatches for one app (one event loop); safe for any number of concurrent requests."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue = TaskQueue(settings)
        self._database = settings.database
        self._one_writer = is_sqlite(settings.database.url or "")
        self._pending: list[_Request] = []
        self._writer: asyncio.Task[None] | None = None

    async def enqueue(self, task: ValidTask, owner: str, caller: Caller) -> Accepted:
        """Queue ``task`` (validated and authorised) once its group has committed: what
        :meth:`TaskQueue.enqueue` returns, or raises (:class:`QueueFull`, a database error)."""
        return await self._join(task, None, owner, caller)  # type: ignore[no-any-return]

    async def enqueue_batch(self, batch: NewTasks, caller: Caller) -> list[Accepted]:
        """Queue the tasks of ``batch`` (validated, authorised and made ready), all or nothing: what
        :meth:`TaskQueue.enqueue_many` returns, or raises.

        On SQLite the batch joins the next group: there is one write turn, so a transaction of its own
        only added a commit. On PostgreSQL it is written at once in a transaction of its own: transactions
        run side by side there, and batches joining the one group writer waited for each other (measured:
        3,710-3,956 tasks/s accepted against 5,827-6,719 with a transaction each)."""
        if not self._one_writer:
            return await run_in_threadpool(self._own_transaction, batch, caller)
        return await self._join(None, batch, batch.owner, caller)  # type: ignore[no-any-return]

    def _own_transaction(self, batch: NewTasks, caller: Caller) -> list[Accepted]:
        with session_scope(self._database, write_lock=True) as session:
            accepted = self._queue.enqueue_in(session, batch, caller)
        self._queue.fold_load(every=FOLD_EVERY_SECONDS)  # PostgreSQL's count rows, while no worker folds them
        return accepted

    async def _join(self, task: ValidTask | None, batch: NewTasks | None, owner: str, caller: Caller) -> Any:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Request(task, batch, owner, caller, answer))
        if self._writer is None or self._writer.get_loop() is not loop:  # a test client's loop may be gone
            self._writer = asyncio.create_task(self._write_pending())
        return await answer

    async def _write_pending(self) -> None:
        try:
            while self._pending:
                group = self._next_group()
                if not group:
                    continue
                try:
                    outcomes = await run_in_threadpool(self._store, group)
                except Exception as exc:  # noqa: BLE001 - the database's error: every request of the group gets it
                    outcomes = [exc] * len(group)
                for request, outcome in zip(group, outcomes, strict=True):
                    if request.answer.done():  # its client went away meanwhile: nobody to answer
                        continue
                    if isinstance(outcome, BaseException):
                        request.answer.set_exception(outcome)
                    else:
                        request.answer.set_result(outcome)
        finally:
            self._writer = None

    def _next_group(self) -> list[_Request]:
        """The waiting requests in arrival order, up to :data:`MAX_GROUP_TASKS` tasks (at least one request),
        less those whose client went away before their turn."""
        taken, tasks = 0, 0
        for request in self._pending:
            if taken and tasks + request.size > MAX_GROUP_TASKS:
                break
            taken, tasks = taken + 1, tasks + request.size
        group, self._pending = self._pending[:taken], self._pending[taken:]
        return [request for request in group if not request.answer.done()]

    def _store(self, group: list[_Request]) -> list[Any]:
        """One transaction for the group; written again request by request in savepoints when one of
        them failed (the first try cost a rollback, which is rare: the common case pays no savepoints).
        What needs no transaction is done first (:mod:`orch.dispatch.new_tasks`), once for both tries."""
        senders = self._senders(group)
        try:
            outcomes = self._write(group, senders, alone=False)
        except Exception as exc:  # noqa: BLE001 - one request's row (or a bug) is found below, request by request
            if isinstance(exc, SQLAlchemyError) and not isinstance(exc, _ONE_REQUESTS):
                raise  # the database's own failure: every request of the group gets it
            outcomes = self._write(group, senders, alone=True)
        self._queue.fold_load(every=FOLD_EVERY_SECONDS)  # PostgreSQL's count rows, while no worker folds them
        return outcomes

    def _senders(self, group: list[_Request]) -> list[_Sender]:
        places: dict[tuple[str, Caller], list[tuple[int, ValidTask]]] = {}
        for index, request in enumerate(group):
            if request.task is not None:
                places.setdefault((request.owner, request.caller), []).append((index, request.task))
        chunks = [((owner, caller), singles[start:start + MAX_BATCH])
                  for (owner, caller), singles in places.items() for start in range(0, len(singles), MAX_BATCH)]
        return [_Sender(owner, caller, [index for index, _task in chunk],
                        prepare(self._settings, [task for _index, task in chunk], owner))
                for (owner, caller), chunk in chunks]

    def _write(self, group: list[_Request], senders: list[_Sender], *, alone: bool) -> list[Any]:
        """Every request of the group in one transaction, in order of arrival (a sender's single requests
        at the place of its first): which of them fit under the depth limit follows that order."""
        outcomes: list[Any] = [None] * len(group)
        units: list[tuple[int, _Sender | None]] = [(sender.indexes[0], sender) for sender in senders]
        units += [(index, None) for index, request in enumerate(group) if request.batch is not None]
        with session_scope(self._database, write_lock=True) as session:
            for index, sender in sorted(units, key=lambda unit: unit[0]):
                if sender is None:
                    outcomes[index] = self._write_batch(session, group[index], alone=alone)
                elif alone:
                    for place, at in enumerate(sender.indexes):
                        single = self._alone(session, sender.new.only([place]), sender.caller,
                                             keyed=sender.new.tasks[place].idempotency_key is not None)
                        outcomes[at] = single if isinstance(single, Exception) else single[0]
                else:
                    self._write_singles(session, sender, outcomes)
        return outcomes

    def _write_batch(self, session: Session, request: _Request, *, alone: bool) -> list[Accepted] | Exception:
        """A batch request, all or nothing: above the depth limit it is refused whole (before writing)."""
        batch = request.batch
        assert batch is not None
        if alone:
            return self._alone(session, batch, request.caller,
                               keyed=any(task.idempotency_key is not None for task in batch.tasks))
        try:
            return self._queue.enqueue_in(session, batch, request.caller)
        except QueueFull as refusal:
            return refusal

    def _write_singles(self, session: Session, sender: _Sender, outcomes: list[Any]) -> None:
        """One sender's single requests of the group through the queue's batch path (one depth check, one
        insert per table, one audit entry): the statements per task were most of a single dispatch's
        cost, and on PostgreSQL each is a round trip. A key repeated in the group is answered with the
        task its first request made or found; when the batch would overfill the queue, the requests go
        one by one, so that exactly those that fit are queued."""
        first_of_key: dict[str, int] = {}
        batch: list[int] = []  # places in sender.indexes of the requests written
        for place, index in enumerate(sender.indexes):
            key = sender.new.tasks[place].idempotency_key
            if key is not None and key in first_of_key:
                continue
            if key is not None:
                first_of_key[key] = index
            batch.append(place)
        new = sender.new if len(batch) == len(sender.indexes) else sender.new.only(batch)
        try:
            results: list[Accepted | Exception] = list(self._queue.enqueue_in(session, new, sender.caller))
        except QueueFull:  # raised before the batch wrote anything
            results = [self._one_or_refusal(session, sender, place) for place in batch]
        for place, result in zip(batch, results, strict=True):
            outcomes[sender.indexes[place]] = result
        for place, index in enumerate(sender.indexes):
            if outcomes[index] is None:  # a repeated key: what its first request got, not created by this one
                first = outcomes[first_of_key[sender.new.tasks[place].idempotency_key or ""]]
                assert first is not None
                outcomes[index] = first if isinstance(first, Exception) else (
                    {k: v for k, v in first[0].items() if k != "estimated_wait_seconds"}, False)

    def _one_or_refusal(self, session: Session, sender: _Sender, place: int) -> Accepted | Exception:
        try:
            return self._queue.enqueue_in(session, sender.new.only([place]), sender.caller)[0]
        except QueueFull as refusal:  # checked before the request writes anything
            return refusal

    def _alone(self, session: Session, new: NewTasks, caller: Caller, *, keyed: bool) -> list[Accepted] | Exception:
        """One request's tasks in a savepoint of their own; its own failure is its answer. A unique key
        taken by a concurrent writer (another API replica, the CLI) is tried once more when the request
        carries idempotency keys (``keyed``): the key then finds the task that writer committed, as
        :meth:`TaskQueue.enqueue` does."""
        try:
            with session.begin_nested():
                return self._queue.enqueue_in(session, new, caller)
        except IntegrityError as exc:
            if not keyed:
                return exc
        except _ONE_REQUESTS as exc:
            return exc
        except QueueFull as refusal:  # checked before the request writes anything
            return refusal
        except SQLAlchemyError:
            raise
        except Exception as exc:  # noqa: BLE001 - this request's problem only
            return exc
        try:
            with session.begin_nested():
                return self._queue.enqueue_in(session, new, caller)
        except (*_ONE_REQUESTS, QueueFull) as exc:
            return exc
