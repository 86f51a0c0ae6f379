"""The task queue of record: enqueue, claim under limits and locks, leases, and every status move.

Every move is one transaction that changes the task *and* writes its event, so the history can never
disagree with the state. Moves out of ``running`` are conditional on the claim that started them
(same attempt, same lease owner, still running): a dispatcher that lost its lease, a task cancelled
meanwhile, or a duplicate report changes nothing, so a task is never completed twice.

Every move begins ``IMMEDIATE`` on SQLite: a transaction that reads and then writes would otherwise
fail at once with "database is locked" when another process wrote in between (WAL cannot upgrade a
stale read). Claims are serialised: by that on SQLite, by a transaction-scoped advisory lock on
PostgreSQL (the tasks taken are locked, and checked still queued, as they are read whole). A claim is a few
milliseconds, and serialising it is what makes the per-core and global limits exact with several dispatchers.

What a move writes besides the task is in modules of its own: the event and log line
(:mod:`orch.dispatch.task_history`), the audit entry (:mod:`orch.dispatch.task_audit`); what callers get
back is :mod:`orch.dispatch.task_views`, and a new task's estimated wait :mod:`orch.dispatch.wait_estimate`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from orch.audit import Caller
from orch.config.schema import Settings
from orch.dispatch import lease_owner as owners
from orch.dispatch.core_load import fold, vacuum
from orch.dispatch.errors import InvalidTransition, QueueFull, TaskNotFound
from orch.dispatch.locks import expire_locks, record_acquisition
from orch.dispatch.new_tasks import MAX_BATCH, NewTasks, prepare
from orch.dispatch.ordering import Priority, enqueued_at, sort_key
from orch.dispatch.request import ValidTask
from orch.dispatch.reservations import NotReserved, release_core
from orch.dispatch.task_audit import audit_task_change
from orch.dispatch.task_filter import TaskFilter, after, encode_cursor
from orch.dispatch.task_history import Move, add_event, add_events, note_task_runs
from orch.dispatch.task_views import event_view, task_view, view_of_row
from orch.dispatch.wait_estimate import estimated_waits, work_ahead
from orch.logging_config import get_logger
from orch.storage.engine import get_engine, is_sqlite, session_scope
from orch.storage.group_commit import GroupCommit
from orch.storage.models import (
    CoreReservation,
    LockWaiter,
    ResourceLock,
    Task,
    TaskEvent,
)
from orch.storage.types import DATABASE_NOW, UTCDateTime, clock_of_record, reads_database_clock, utcnow

log = get_logger(__name__)
CLAIM_LOCK_KEY = 0x0_7C_4D_15  # pg_advisory_xact_lock key that serialises claims
# The claim's turn and the clock of record in one round trip: the clock is read once the turn is taken
# (OFFSET 0 keeps the subquery, and so the wait for the lock, ahead of it), so a claim that waited for
# the turn stamps leases and judges expiry by the time it actually runs.
_CLAIM_TURN = text("SELECT clock_timestamp() AS now FROM (SELECT pg_advisory_xact_lock(:key) OFFSET 0) AS turn"
                   ).columns(now=UTCDateTime)
SCAN_BATCH = 500
# The claim's and the attempt's end's statements, built once: a claim and an end are once per task each, and
# building their expressions cost about as much as the database running them (as wait_estimate found).
_RUNNING = select(Task.core_id, Task.lease_expires_at).where(Task.status == "running")
_LOCKS = select(ResourceLock.resource, ResourceLock.expires_at)
_RESERVED = select(CoreReservation.core_id, CoreReservation.owner).where(CoreReservation.expires_at > bindparam("now"))
_WAITING = (select(LockWaiter.resource, func.min(LockWaiter.sort_key))
            .where(LockWaiter.expires_at > bindparam("now")).group_by(LockWaiter.resource))
# The tasks a claim takes, locked in task id order (as every other writer of many task rows locks them) and
# still queued once locked: the pages it chose them from are read without locks, so a cancel that committed
# meanwhile leaves its task out here (on PostgreSQL the lock waits for it, then reads the row again).
_PICKED = (select(Task).where(Task.task_id.in_(bindparam("task_ids", expanding=True)), Task.status == "queued")
           .order_by(Task.task_id).with_for_update())
_HELD = (Task.task_id == bindparam("task_id"), Task.status == "running", Task.attempts == bindparam("attempt"),
         Task.lease_owner == bindparam("owner"))
_HELD_TASK = select(Task).where(*_HELD).with_for_update()
_RUNNING_IDS = (Task.task_id.in_(bindparam("task_ids", expanding=True)), Task.status == "running")
# Several rows are locked in task id order by every statement that locks running tasks by id, so that two
# such transactions on PostgreSQL wait for each other instead of deadlocking.
_HELD_TASKS = select(Task).where(*_RUNNING_IDS).order_by(Task.task_id).with_for_update()
_HELD_TASKS_AND_CLOCK = select(Task, DATABASE_NOW).where(*_RUNNING_IDS).order_by(Task.task_id).with_for_update(of=Task)
_LOCK_RUNNING = select(Task.task_id).where(*_RUNNING_IDS).order_by(Task.task_id).with_for_update()
MAX_END_GROUP = 64  # attempt ends per transaction (a dispatcher runs at most 64 at a time)


TERMINAL = ("completed", "failed", "timed_out", "cancelled")
RETRYABLE = ("failed", "timed_out")
# Held by a restore (orch.backup.guard): while it is, claims take nothing. The check reads the held-lock
# names the claim loads anyway, so it costs nothing per claim; the TTL frees it if the restorer dies.
DISPATCH_PAUSE_LOCK = "orch:dispatch-paused"


@lru_cache(maxsize=4)
def _queued_statement(external: bool, skipping: bool) -> Any:
    """Queued tasks in queue order, a page at a time: dispatchers' (everything but ``external``) or one
    outside core's (``external`` only), leaving out the cores at their limit when ``skipping``. Only what
    the claim decides by: the tasks it takes are then read whole (:data:`_PICKED`); reading every scanned
    row whole, its JSON parsed, was most of a claim's cost."""
    query = select(Task.task_id, Task.core_id, Task.owner, Task.locks, Task.sort_key).where(Task.status == "queued")
    if skipping:
        query = query.where(Task.core_id.not_in(bindparam("skip", expanding=True)))
    if external:
        query = query.where(Task.action == "external", Task.core_id == bindparam("core"))
    else:
        query = query.where(Task.action != "external")
    return query.order_by(Task.sort_key).offset(bindparam("offset")).limit(bindparam("batch"))


@dataclass(frozen=True)
class Claim:
    """One attempt of one task, held by ``lease_owner`` until it finishes or its lease expires."""

    task_id: str
    core_id: str
    action: str
    params: dict[str, Any]
    priority: Priority
    timeout: int
    attempt: int
    max_retries: int
    lease_owner: str
    # When this claim's attempt started by the clock of record (its ``task.started`` event's time): its
    # end measures the attempt's duration from it instead of reading the event back.
    started_at: datetime | None = None

    @property
    def retries_left(self) -> int:
        return max(0, self.max_retries + 1 - self.attempt)


@dataclass(frozen=True)
class _End:
    """What :meth:`TaskQueue.finish` was asked to record."""

    claim: Claim
    status: str
    result: Any
    error: str | None
    task_run_id: str | None


class TaskQueue:
    """The queue for one configuration; cheap to create, safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.database
        self.dispatch = settings.dispatch
        self._sqlite = is_sqlite(self.database.url or "")  # decided once: the fold check runs after every write
        self._ends: GroupCommit[_End, bool] = GroupCommit(self._finish_group, MAX_END_GROUP)
        self._folded_at = float("-inf")  # when fold_load last folded (monotonic)

    # ---- enqueue -------------------------------------------------------------------------------
    def enqueue(self, task: ValidTask, owner: str, caller: Caller | None = None) -> tuple[dict[str, Any], bool]:
        """Queue ``task``; returns ``(task, created)``. The same idempotency key from the same owner
        returns the existing task and queues nothing. Raises :class:`QueueFull` above the depth limit."""
        new = prepare(self.settings, [task], owner)
        try:
            with session_scope(self.database, write_lock=True) as session:
                return self.enqueue_in(session, new, caller)[0]
        except IntegrityError:  # a concurrent request with the same idempotency key won the race
            with session_scope(self.database, write_lock=True) as session:
                existing = self._by_idempotency_key(session, owner, task.idempotency_key)
                if existing is None:
                    raise
                return task_view(existing), False

    def enqueue_many(self, tasks: list[ValidTask], owner: str,
                     caller: Caller | None = None) -> list[tuple[dict[str, Any], bool]]:
        """All or nothing: one transaction, one depth check for the whole batch."""
        new = prepare(self.settings, tasks, owner)
        with session_scope(self.database, write_lock=True) as session:
            return self.enqueue_in(session, new, caller)

    def enqueue_in(self, session: Session, new: NewTasks, caller: Caller | None) -> list[tuple[dict[str, Any], bool]]:
        """Accept the tasks ``new`` holds (:func:`~orch.dispatch.new_tasks.prepare`) inside the caller's write
        transaction: each result is the task's view and whether it was created (False: its idempotency key
        named an existing task of the owner).

        :class:`QueueFull` is raised before anything is written, so a caller that catches it (the API's
        dispatch group, :mod:`orch.api.dispatch_group`) can go on in the same transaction."""
        results: list[tuple[dict[str, Any], bool] | None] = []
        fresh: list[int] = []
        for index, task in enumerate(new.tasks):
            existing = self._by_idempotency_key(session, new.owner, task.idempotency_key)
            results.append((task_view(existing), False) if existing else None)
            if existing is None:
                fresh.append(index)
        if not fresh:
            return [result for result in results if result is not None]
        if len(fresh) < len(new.tasks):
            new = new.only(fresh)
        rows = new.rows
        # Core statements go through the session's connection, past the ORM's per-statement machinery:
        # accepting a task is a handful of statements, and the ORM layer was a third of its cost.
        connection = session.connection()
        # before the insert: it gives the depth too
        ahead = work_ahead(connection, rows, self.dispatch.aging_seconds)
        if ahead.epoch is not None:  # queue places by the database's clock (orch.storage.types.clock_of_record)
            rows = [{**row, "sort_key": sort_key(ahead.epoch, Priority(row["priority"]), self.dispatch.aging_seconds)}
                    for row in rows]
        if ahead.depth + len(rows) > self.dispatch.max_queue_depth:
            raise QueueFull(ahead.depth, self.dispatch.max_queue_depth, self.dispatch.retry_after_seconds)
        # Core inserts, one executemany each for the batch: the ORM's per-object (or bulk) machinery
        # was most of the cost of accepting a task. One audit entry per call, not per task.
        connection.execute(insert(Task.__table__), rows)
        connection.execute(insert(TaskEvent.__table__), new.events)
        ids = [row["task_id"] for row in rows]
        audit_task_change(session, new.owner, "task.create", ids[0] if len(ids) == 1 else None, caller,
                          {"count": len(ids), "task_ids": ids[:MAX_BATCH],
                           "core_ids": sorted({row["core_id"] for row in rows})[:20], "tasks": new.records})
        waits = estimated_waits(connection, rows, ahead, self.core_limit)
        created = iter(rows)
        out = []
        for result in results:
            if result is None:
                row = next(created)
                result = ({**view_of_row(row), "estimated_wait_seconds": waits[row["task_id"]]}, True)
            out.append(result)
        return out

    @staticmethod
    def _by_idempotency_key(session: Session, owner: str, key: str | None) -> Task | None:
        if key is None:
            return None
        return session.scalar(select(Task).where(Task.owner == owner, Task.idempotency_key == key))

    # ---- claim ---------------------------------------------------------------------------------
    def claim(self, lease_owner: str, limit: int, *, external_core: str | None = None) -> list[Claim]:
        """Take up to ``limit`` queued tasks in queue order that fit every limit, and lease them.

        Dispatchers claim everything but ``external`` tasks; an outside core claims its own
        ``external`` tasks with ``external_core`` (their lease is the task's timeout).
        """
        if limit <= 0:
            return []
        with session_scope(self.database, write_lock=True) as session:
            if is_sqlite(self.database.url or ""):
                now = utcnow()
            else:
                now = session.execute(_CLAIM_TURN, {"key": CLAIM_LOCK_KEY}).scalar_one()
            # What runs and which locks are held, each read once with its expiry: the rare expired lease or
            # lock is dealt with (and read again) only when there is one. A claim is once per task, and
            # the statements that found nothing to expire were half of its cost.
            running = session.execute(_RUNNING).all()
            if any(expires is not None and expires < now for _core, expires in running):
                self._recover_expired(session, now)
                running = session.execute(_RUNNING).all()
            per_core = Counter(core for core, _expires in running)
            locks = session.execute(_LOCKS).all()
            if any(expires <= now for _resource, expires in locks):
                expire_locks(session, now)
                locks = [(resource, expires) for resource, expires in locks if expires > now]
            held_locks = {resource for resource, _expires in locks}
            if DISPATCH_PAUSE_LOCK in held_locks:
                return []
            waiting: dict[str, Any] | None = None  # the first live waiter per lock: read once a task needs a lock
            free = self.settings.features.max_concurrent_tasks - len(running)
            reserved = dict(session.execute(_RESERVED, {"now": now}).all())
            picked: list[str] = []
            full = {core for core, busy in per_core.items() if busy >= self.core_limit(core)}
            for task in self._queued(session, external_core, batch=min(SCAN_BATCH, max(16, 4 * limit)), full=full):
                if len(picked) >= min(limit, free):
                    break
                if per_core[task.core_id] >= self.core_limit(task.core_id) or task.task_id in picked:
                    continue  # (a row read twice: tasks of one batch share a queue place, their order may vary)
                if task.core_id in reserved and reserved[task.core_id] != task.owner:
                    continue
                needs = task.locks or []
                if needs and waiting is None:
                    waiting = dict(session.execute(_WAITING, {"now": now}).all())
                if held_locks.intersection(needs) or any(
                        (waiting or {}).get(name, task.sort_key) < task.sort_key for name in needs):
                    continue  # held, or a flow that sorts ahead of this task is waiting for it
                picked.append(task.task_id)
                per_core[task.core_id] += 1
                if per_core[task.core_id] >= self.core_limit(task.core_id):
                    full.add(task.core_id)  # the next page leaves its tasks out
                held_locks.update(task.locks or [])
            lease = timedelta(seconds=self.dispatch.lease_seconds)
            claims, moves = [], []
            whole = {task.task_id: task for task in session.scalars(_PICKED, {"task_ids": picked})} if picked else {}
            for task in (whole[task_id] for task_id in picked if task_id in whole):
                task.status, task.attempts, task.lease_owner = "running", task.attempts + 1, lease_owner
                task.started_at = task.started_at or now
                task.lease_expires_at = now + (timedelta(seconds=task.timeout) if external_core else lease)
                for name in task.locks or []:
                    session.add(ResourceLock(resource=name, owner=f"task:{task.task_id}", priority=task.priority,
                                             acquired_at=now, expires_at=task.lease_expires_at))
                    record_acquisition(session, name, now.timestamp() - enqueued_at(
                        task.sort_key, Priority(task.priority), self.dispatch.aging_seconds))
                moves.append((task, "task.started", {"attempt": task.attempts, "dispatcher": lease_owner}, now))
                claims.append(Claim(task.task_id, task.core_id, task.action, task.params, Priority(task.priority),
                                    task.timeout, task.attempts, task.max_retries, lease_owner, now))
            add_events(session, moves)
            return claims

    def _queued(self, session: Session, external_core: str | None, batch: int,  # type: ignore[no-untyped-def]
                full: set[str]):
        """Queued tasks in queue order (their id, core, owner, locks and queue place), ``batch`` rows at a
        time (a claim of one task reads a few rows, not hundreds, while it holds the write lock). The rows
        are not locked: claims take turns (SQLite's write turn, PostgreSQL's advisory lock), and the tasks
        taken are locked and checked still queued when they are read whole (:data:`_PICKED`). Locking every
        row of a page cost PostgreSQL a row lock, written to its heap and log, for each row read.

        Tasks of the ``full`` cores (at their limit) are left out by the database: a thousand tasks waiting
        at the head of the queue for busy cores were read as objects and skipped one by one by every claim
        (37 ms a claim instead of 2 in ``scripts/bench_queue_scale.py``). The caller adds a core to ``full``
        when a pick fills it, and the next page is asked for without it, from the place reached among the
        rest: otherwise a dispatcher with more room than the free cores could use read those cores' whole
        backlog at every claim (issue 17: most of the dispatcher's CPU per task with a burst queued). The
        rest of a page is read on first (the caller skips its rows of the cores that filled): asking again
        at every pick, when each core takes one task, cost a claim of 8 tasks 13 queries instead of 5."""
        cores_read: list[str] = []  # the core of every row yielded so far, in order
        while True:
            skipping = sorted(full)
            offset = sum(1 for core in cores_read if core not in full)
            rows = session.execute(_queued_statement(external_core is not None, bool(skipping)),
                                   {"batch": batch, "skip": skipping, "core": external_core, "offset": offset}).all()
            for row in rows:
                cores_read.append(row.core_id)
                yield row
            if len(rows) < batch:
                return

    def core_limit(self, core_id: str) -> int:
        core = self.dispatch.cores.get(core_id)
        return core.concurrency if core and core.concurrency else self.dispatch.core_concurrency

    def _recover_expired(self, session: Session, now: datetime) -> None:
        """Running tasks whose lease ran out (their dispatcher died, or an external core went silent)
        go back to the queue at their old place while attempts remain, else end failed/timed out."""
        expired = session.scalars(select(Task).where(Task.status == "running", Task.lease_expires_at < now)
                                  .with_for_update(skip_locked=True)).all()
        for task in expired:
            self._lease_over(session, task, "timeout" if task.action == "external" else "lease expired", now)

    def _lease_over(self, session: Session, task: Task, reason: str, now: datetime) -> None:
        """The task's attempt is over without an answer: queued again while attempts remain, else ended."""
        if task.attempts <= task.max_retries:
            add_event(session, task, "task.retrying", {"attempt": task.attempts, "reason": reason,
                                                       "dispatcher": task.lease_owner})
            task.status, task.lease_owner, task.lease_expires_at = "queued", None, None
            self._release_locks(session, task)
        else:
            final = "timed_out" if task.action == "external" else "failed"
            add_events(session, [self._end(session, task, final, now,
                                           error=f"{reason} after {task.attempts} attempt(s)")])

    def fold_load(self, every: float = 0.0) -> int:
        """Fold the per-core counts' rows (PostgreSQL, :mod:`orch.dispatch.core_load`); how many cores.

        With ``every``, only when this queue last folded at least that many seconds ago: the dispatcher
        and the API's writers call it as they go (either alone keeps the rows short, so accepts read
        little while the worker is down, and the worker's claims while the API is idle). A failure is
        housekeeping's, not the caller's (whose own write has committed): logged, and tried again later."""
        if self._sqlite:
            return 0  # its triggers keep one row per core
        now = time.monotonic()
        if now - self._folded_at < every:
            return 0
        self._folded_at = now
        try:
            with session_scope(self.database) as session:
                folded = fold(session.connection())
            if folded:  # the rows it summed are dead: reclaimed now, not when autovacuum comes (if ever)
                with get_engine(self.database).connect() as connection:
                    vacuum(connection.execution_options(isolation_level="AUTOCOMMIT"))
            return folded
        except SQLAlchemyError as exc:
            log.warning("folding core_load failed (tried again in %g s): %s", every, exc)
            return 0

    def release_dead_leases(self) -> int:
        """Hand back at once the tasks leased by dispatchers of this host that are provably gone
        (:mod:`orch.dispatch.lease_owner`), instead of waiting out their leases. Returns how many."""
        prefix = owners.host_prefix()
        released = 0
        with session_scope(self.database, write_lock=True) as session:
            held = session.scalars(select(Task).where(Task.status == "running", Task.lease_owner.startswith(
                prefix, autoescape=True)).with_for_update(skip_locked=True)).all()
            now = clock_of_record(session)
            for task in held:
                reason = owners.gone(task.lease_owner or "")
                if reason is not None:
                    self._lease_over(session, task, reason, now)
                    released += 1
        if released:
            log.warning("released %d task(s) leased by dispatchers of this host that are gone", released)
        return released

    def hand_back(self, lease_owner: str, task_ids: list[str], reason: str,
                  task_runs: dict[str, str] | None = None) -> int:
        """Release at once the leases ``lease_owner`` still holds on ``task_ids``: a dispatcher that stops
        without waiting for them hands them back exactly as a lapsed lease would later (queued again at
        their place while attempts remain, else ended), only without the wait. Returns how many.
        ``task_runs`` go on the attempts' ``task.started`` events, as with :meth:`renew`."""
        if not task_ids:
            return 0
        with session_scope(self.database, write_lock=True) as session:
            held = session.scalars(select(Task).where(Task.task_id.in_(task_ids), Task.status == "running",
                                                      Task.lease_owner == lease_owner)
                                   .order_by(Task.task_id).with_for_update()).all()
            note_task_runs(session, {t.task_id: task_runs[t.task_id] for t in held if t.task_id in (task_runs or {})})
            now = clock_of_record(session)
            for task in held:
                self._lease_over(session, task, reason, now)
            return len(held)

    # ---- while running -------------------------------------------------------------------------
    def renew(self, lease_owner: str, task_ids: list[str], task_runs: dict[str, str] | None = None) -> set[str]:
        """Extend the leases this dispatcher still holds; the ids not returned were lost or cancelled.

        ``task_runs`` (ORCH task id -> Prefect task run id, for attempts started since the last renewal)
        go on those attempts' ``task.started`` events (:func:`note_task_runs`)."""
        if not task_ids:
            return set()
        with session_scope(self.database, write_lock=True) as session:
            if not is_sqlite(self.database.url or ""):  # in task id order, as attempt ends lock them
                session.execute(_LOCK_RUNNING, {"task_ids": task_ids})
            expires = clock_of_record(session) + timedelta(seconds=self.dispatch.lease_seconds)
            rows = session.execute(update(Task).where(Task.task_id.in_(task_ids), Task.status == "running",
                                                      Task.lease_owner == lease_owner)
                                   .values(lease_expires_at=expires).returning(Task.task_id)).all()
            held = {row[0] for row in rows}
            if held:
                session.execute(update(ResourceLock).where(ResourceLock.owner.in_([f"task:{t}" for t in held]))
                                .values(expires_at=expires))
            note_task_runs(session, {t: run for t, run in (task_runs or {}).items() if t in held})
            return held

    def retrying(self, claim: Claim, error: str, delay: float) -> Claim | None:
        """Attempt ``claim.attempt`` failed and another follows after ``delay`` s; None if the claim was lost."""
        with session_scope(self.database, write_lock=True) as session:
            task = self._held(session, claim)
            if task is None:
                return None
            task.attempts += 1
            task.error = error
            task.lease_expires_at = clock_of_record(session) + timedelta(seconds=self.dispatch.lease_seconds + delay)
            session.execute(update(ResourceLock).where(ResourceLock.owner == f"task:{task.task_id}")
                            .values(expires_at=task.lease_expires_at))
            add_event(session, task, "task.retrying", {"attempt": task.attempts, "error": error, "delay": delay})
            return replace(claim, attempt=task.attempts)  # Prefect's retry: the same run, so the same start

    def finish(self, claim: Claim, status: str, *, result: Any = None, error: str | None = None,
               task_run_id: str | None = None) -> bool:
        """End the attempt; False (and nothing changed) when the claim is stale, e.g. cancelled.

        Ends that arrive while another is being written share the next transaction
        (:class:`~orch.storage.group_commit.GroupCommit`): the dispatcher's task threads end their attempts
        at once, and a transaction each took the write turn once per task. ``task_run_id`` (the Prefect
        task run that ran the claim) goes on its ``task.started`` event unless a lease renewal put it
        there already: most tasks end before their first renewal."""
        if status not in ("completed", "failed", "timed_out"):
            raise ValueError(f"cannot finish a task as {status!r}")
        return self._ends.submit(_End(claim, status, result, error, task_run_id))

    def _finish_group(self, ends: list[_End]) -> list[bool | Exception]:
        """The ends in one transaction; when that fails, each in a transaction of its own, so that one
        end's failure (or a deadlock on PostgreSQL) is that end's answer only."""
        try:
            with session_scope(self.database, write_lock=True) as session:
                return self._end_attempts(session, ends)
        except Exception:
            if len(ends) == 1:
                raise
        outcomes: list[bool | Exception] = []
        for end in ends:
            try:
                with session_scope(self.database, write_lock=True) as session:
                    outcomes.extend(self._end_attempts(session, [end]))
            except Exception as exc:  # noqa: BLE001 - this end's own answer
                outcomes.append(exc)
        return outcomes

    def _end_attempts(self, session: Session, ends: list[_End]) -> list[bool | Exception]:
        """End each attempt still held by its claim (same attempt, same owner, running): one statement
        reads and locks them all (in task id order, as renewals lock them), with the clock of record."""
        statement = _HELD_TASKS_AND_CLOCK if reads_database_clock(session) else _HELD_TASKS
        rows = session.execute(statement, {"task_ids": sorted({end.claim.task_id for end in ends})}).all()
        outcomes: list[bool | Exception] = [False] * len(ends)
        if not rows:
            return outcomes
        tasks = {row[0].task_id: row[0] for row in rows}
        now = rows[0][1] if len(rows[0]) > 1 else utcnow()
        held = [index for index, end in enumerate(ends) if (task := tasks.get(end.claim.task_id)) is not None
                and task.attempts == end.claim.attempt and task.lease_owner == end.claim.lease_owner]
        note_task_runs(session, {ends[i].claim.task_id: ends[i].task_run_id for i in held if ends[i].task_run_id})
        moves = []
        for index in held:
            end, task = ends[index], tasks[ends[index].claim.task_id]
            if task.status == "running":  # not if the same attempt came twice in one group: the first ended it
                moves.append(self._end(session, task, end.status, now, result=end.result, error=end.error,
                                       attempt_started=end.claim.started_at))
                outcomes[index] = True
        add_events(session, moves)
        return outcomes

    @staticmethod
    def _held(session: Session, claim: Claim) -> Task | None:
        return session.scalar(_HELD_TASK, {"task_id": claim.task_id, "attempt": claim.attempt,
                                           "owner": claim.lease_owner})

    def _end(self, session: Session, task: Task, status: str, now: datetime, *, result: Any = None,
             error: str | None = None, attempt_started: datetime | None = None) -> Move:
        """End ``task`` as ``status``; returns its event, for the caller to record with the others of its
        transaction (:func:`~orch.dispatch.task_history.add_events`). The event gives the duration of the
        attempt that ended, from ``attempt_started`` when the caller knows it (a dispatcher's claim), else
        from its latest ``task.started`` event."""
        task.status, task.finished_at, task.lease_owner, task.lease_expires_at = status, now, None, None
        task.result, task.error = result, error if status != "completed" else None
        self._release_locks(session, task)
        data: dict[str, Any] = {"attempts": task.attempts}
        if attempt_started is None:
            attempt_started = session.scalar(select(func.max(TaskEvent.timestamp)).where(
                TaskEvent.task_id == task.task_id, TaskEvent.event_type == "task.started"))
        if attempt_started:  # the duration of the attempt that ended, not of all attempts together
            data["duration"] = round((now - attempt_started).total_seconds(), 3)
        if error:
            data["error"] = error
        if task.stay:
            self._reserve(session, task, now)
        return task, f"task.{status}", data, now

    @staticmethod
    def _release_locks(session: Session, task: Task) -> None:
        if task.locks:
            session.execute(delete(ResourceLock).where(ResourceLock.owner == f"task:{task.task_id}"))

    def _reserve(self, session: Session, task: Task, now: datetime) -> None:
        """``stay``: the core stays reserved for this task's owner for ``dispatch.stay_seconds``."""
        expires = now + timedelta(seconds=self.dispatch.stay_seconds)
        reservation = session.get(CoreReservation, task.core_id, with_for_update=True)
        if reservation is None:
            session.add(CoreReservation(core_id=task.core_id, owner=task.owner, task_id=task.task_id,
                                        expires_at=expires))
        elif reservation.owner == task.owner or reservation.expires_at <= now:
            reservation.owner, reservation.task_id, reservation.expires_at = task.owner, task.task_id, expires

    # ---- operator moves ------------------------------------------------------------------------
    def cancel(self, task_id: str, actor: str, caller: Caller | None = None) -> dict[str, Any]:
        """Cancel a queued or running task (a running one's result, if it comes, is ignored)."""
        with session_scope(self.database, write_lock=True) as session:
            task = session.get(Task, task_id, with_for_update=True)
            if task is None:
                raise TaskNotFound(task_id)
            if task.status in TERMINAL:
                raise InvalidTransition(f"task {task_id} is already {task.status}")
            self.cancel_in(session, task, actor, caller)
            return task_view(task)

    def cancel_in(self, session: Session, task: Task, actor: str, caller: Caller | None) -> None:
        """Cancel ``task`` (queued or running, locked by the caller) in ``session``'s transaction, audited."""
        was = task.status
        task.status, task.lease_owner, task.lease_expires_at = "cancelled", None, None
        task.finished_at = clock_of_record(session)
        self._release_locks(session, task)
        add_event(session, task, "task.cancelled", {"by": actor, "was": was})
        audit_task_change(session, actor, "task.cancel", task.task_id, caller, {"was": was})

    def reset_failed(self, actor: str, task_ids: list[str] | None = None,
                     caller: Caller | None = None) -> list[str]:
        """Put failed and timed-out tasks back in the queue with fresh attempts (the guide's
        ``reset_failed_tasks``); ``task_ids`` limits it to those tasks. Returns the ids re-queued."""
        with session_scope(self.database, write_lock=True) as session:
            query = select(Task).where(Task.status.in_(RETRYABLE)).with_for_update()
            if task_ids is not None:
                query = query.where(Task.task_id.in_(task_ids))
            tasks = session.scalars(query).all()
            for task in tasks:
                self.requeue_in(session, task, actor)
            reset = [task.task_id for task in tasks]
            if reset:
                audit_task_change(session, actor, "task.retry", reset[0] if len(reset) == 1 else None, caller,
                       {"count": len(reset), "task_ids": reset[:100]})
            return reset

    def requeue_in(self, session: Session, task: Task, actor: str) -> None:
        """Queue a failed or timed-out ``task`` again with fresh attempts; the caller audits it."""
        was = task.status
        task.status, task.attempts, task.error, task.result = "queued", 0, None, None
        task.started_at = task.finished_at = None
        task.sort_key = sort_key(clock_of_record(session).timestamp(), Priority(task.priority),
                                 self.dispatch.aging_seconds)
        add_event(session, task, "task.retrying", {"reason": "reset-failed", "by": actor, "was": was})

    def release_core(self, core_id: str, actor: str, caller: Caller | None = None) -> bool:
        """End a core's reservation early (:func:`orch.dispatch.reservations.release_core`); False if the
        core was not reserved."""
        try:
            release_core(self.settings, core_id, actor, caller)
        except NotReserved:
            return False
        return True

    # ---- outside cores -------------------------------------------------------------------------
    def report(self, task_id: str, core_id: str, status: str, *, attempt: int | None = None, result: Any = None,
               error: str | None = None, caller: Caller | None = None) -> dict[str, Any]:
        """An outside core reports on an ``external`` task it claimed: ``running`` renews its lease
        (a heartbeat), ``completed``/``failed`` end the attempt. Only the core holding the task may
        report, and only for the current attempt when ``attempt`` is given, so a late or replayed
        report changes nothing (:class:`InvalidTransition`)."""
        if status not in ("running", "completed", "failed"):
            raise InvalidTransition(f"status must be running, completed or failed, not {status!r}")
        with session_scope(self.database, write_lock=True) as session:
            task = session.get(Task, task_id, with_for_update=True)
            if task is None:
                raise TaskNotFound(task_id)
            if task.action != "external":
                raise InvalidTransition(f"task {task_id} is run by ORCH's dispatcher ({task.action}); "
                                        "only external tasks are reported by cores")
            if task.status != "running" or task.lease_owner != f"core:{core_id}":
                raise InvalidTransition(f"task {task_id} is {task.status}"
                                        + (f" on core {task.core_id}" if task.core_id != core_id else "")
                                        + f", not running on core {core_id}; claim it first")
            if attempt is not None and attempt != task.attempts:
                raise InvalidTransition(f"attempt {attempt} of task {task_id} is over; the current attempt "
                                        f"is {task.attempts}")
            now = clock_of_record(session)
            if status == "running":
                task.lease_expires_at = now + timedelta(seconds=task.timeout)
                session.execute(update(ResourceLock).where(ResourceLock.owner == f"task:{task.task_id}")
                                .values(expires_at=task.lease_expires_at))
            else:
                add_events(session, [self._end(session, task, status, now, result=result, error=error)])
                audit_task_change(session, f"core:{core_id}", f"task.{status}", task_id, caller,
                       {"attempt": task.attempts})
            return task_view(task)

    # ---- reading -------------------------------------------------------------------------------
    def get(self, task_id: str) -> dict[str, Any]:
        with session_scope(self.database) as session:
            task = session.get(Task, task_id)
            if task is None:
                raise TaskNotFound(task_id)
            return task_view(task)

    def events(self, task_id: str) -> list[dict[str, Any]]:
        with session_scope(self.database) as session:
            if session.get(Task, task_id) is None:
                raise TaskNotFound(task_id)
            rows = session.scalars(select(TaskEvent).where(TaskEvent.task_id == task_id)
                                   .order_by(TaskEvent.event_id)).all()
            return [event_view(event) for event in rows]

    def page(self, task_filter: TaskFilter, limit: int = 50, cursor: str | None = None,
             offset: int = 0) -> tuple[list[dict[str, Any]], str | None]:
        """Tasks matching ``task_filter``, newest first (``created_at`` desc, ``task_id``), and the cursor
        of the next page (None at the end). A cursor continues right after the row it was made from, so
        its cost does not grow with the depth of the page; ``offset`` (which does) is kept for old callers.
        Raises :class:`orch.dispatch.errors.InvalidTask` for a malformed cursor or an unusable filter."""
        query = task_filter.apply(select(Task)).where(*after(cursor))
        query = query.order_by(Task.created_at.desc(), Task.task_id).offset(offset).limit(limit + 1)
        with session_scope(self.database) as session:
            rows = list(session.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            return ([task_view(t) for t in rows],
                    encode_cursor(rows[-1].created_at, rows[-1].task_id) if more and rows else None)

    def list(self, *, status: str | None = None, core_id: str | None = None, limit: int = 50,
             offset: int = 0) -> list[dict[str, Any]]:
        """One page of :meth:`page` without its cursor."""
        return self.page(TaskFilter(status=status, core_id=core_id), limit, offset=offset)[0]

    def depth(self) -> dict[str, int]:
        """Queued tasks per priority name (all four, zeros included)."""
        with session_scope(self.database) as session:
            counts = dict(session.execute(select(Task.priority, func.count()).where(Task.status == "queued")
                                          .group_by(Task.priority)).all())
        return {p.label: int(counts.get(int(p), 0)) for p in sorted(Priority, reverse=True)}
