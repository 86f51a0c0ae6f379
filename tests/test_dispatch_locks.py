"""Resource locks on SQLite and PostgreSQL: TTL, waiting order, extend/release, statistics, and the
interplay of locks held by running tasks and by flows."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from support import wait_until

from orch.config.schema import Settings
from orch.dispatch.locks import LockManager, LockNotHeld, LockTimeout
from orch.dispatch.ordering import Priority
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.types import utcnow


def waiting(locks: LockManager, resource: str) -> list[str]:
    """The owners in line for ``resource``, in the order they will get it."""
    return [w["owner"] for entry in locks.list() if entry["resource"] == resource for w in entry["waiting"]]


def test_ttl_expiry_frees_a_dead_holders_lock(settings: Settings) -> None:
    """A holder that dies (nobody extends its lock) loses it when the TTL runs out, and a waiter gets it
    then (the stats count the expiry). The waiter's own deadline-bounded wait is the poll: the test waits
    as long as the TTL takes, not a fixed time; a TTL that never ran out would end it in LockTimeout."""
    locks = LockManager(settings)
    locks.acquire("db:orders", "backup-1", ttl=0.05)  # backup-1 "dies" at once: nobody extends its lock
    assert locks.acquire("db:orders", "other", ttl=60, timeout=30, poll_seconds=0.01)["owner"] == "other"
    with pytest.raises(LockTimeout, match="held by other"):
        locks.acquire("db:orders", "late", ttl=5, timeout=0)
    [entry] = locks.list()
    assert entry["stats"]["expirations"] == 1 and entry["stats"]["timeouts"] == 1
    assert entry["stats"]["acquisitions"] == 2


def test_extend_and_release_only_by_the_holder(settings: Settings) -> None:
    """Only the holder moves its lock, and an extension sets the expiry from now, longer or shorter: the
    lock frees itself at the extension's expiry, not the first TTL's (a 600 s lock cut to 0.05 s frees
    within the test's wait; had the extension not counted, it would be held for ten minutes)."""
    locks = LockManager(settings)
    first = locks.acquire("r", "alice", ttl=60)
    extended = locks.extend("r", "alice", ttl=600)
    assert extended["expires_at"] > first["expires_at"]
    with pytest.raises(LockNotHeld):
        locks.extend("r", "mallory", ttl=60)
    with pytest.raises(LockNotHeld):
        locks.release("r", "mallory")
    assert locks.list()[0]["held"]["owner"] == "alice"
    assert locks.release("r", "alice") is True and locks.release("r") is False

    locks.acquire("r", "alice", ttl=600)
    locks.extend("r", "alice", ttl=0.05)
    wait_until(lambda: locks.list()[0]["held"] is None, 30, "the shortened lock to expire", interval=0.01)


def test_waiters_get_the_lock_by_priority_then_arrival(settings: Settings) -> None:
    """Arrival order is made explicit: each waiter starts only once the one before it is recorded in the
    line (its place is fixed when it is recorded), so ``normal-1`` is ahead of ``normal-2`` however
    slowly the threads are scheduled."""
    locks = LockManager(settings)
    locks.acquire("r", "holder", ttl=60)
    order: list[str] = []
    errors: list[BaseException] = []

    def wait(owner: str, priority: Priority) -> None:
        try:
            locks.acquire("r", owner, ttl=60, priority=priority, timeout=60, poll_seconds=0.02)
            order.append(owner)
            locks.release("r", owner)
        except BaseException as exc:  # noqa: BLE001 - asserted in the test's thread
            errors.append(exc)

    threads = []
    for owner, priority in (("low-1", Priority.LOW), ("normal-1", Priority.NORMAL), ("critical-1", Priority.CRITICAL),
                            ("normal-2", Priority.NORMAL)):
        thread = threading.Thread(target=wait, args=(owner, priority))
        thread.start()
        threads.append(thread)
        wait_until(lambda owner=owner: owner in waiting(locks, "r"), 30, f"{owner} to be recorded in the line",
                   interval=0.01)
    assert waiting(locks, "r") == ["critical-1", "normal-1", "normal-2", "low-1"]
    locks.release("r", "holder")
    for thread in threads:
        thread.join(90)
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    assert order == ["critical-1", "normal-1", "normal-2", "low-1"]
    stats = locks.list()[0]["stats"]
    assert stats["acquisitions"] == 5 and stats["max_wait_seconds"] > 0


def test_hold_renews_while_the_block_runs(settings: Settings) -> None:
    """The block outlives its first TTL and still holds the lock, now with a later expiry: the renewer
    kept it. The test waits for the first expiry to pass (a poll, as long as that takes); the TTL is long
    enough that the renewer, every TTL/3, has two thirds of it to spare on a loaded machine."""
    locks = LockManager(settings)
    with locks.hold("orch:database", "backup", ttl=1.5, timeout=30) as lock:
        first_expiry = datetime.fromisoformat(lock["expires_at"])
        wait_until(lambda: utcnow() > first_expiry, 30, "the first TTL to run out", interval=0.01)
        held = locks.list()[0]["held"]
        assert held is not None and held["owner"] == "backup"
        assert datetime.fromisoformat(held["expires_at"]) > first_expiry
    assert locks.list()[0]["held"] is None


def test_running_tasks_hold_their_locks_and_flows_wait_in_line(settings: Settings) -> None:
    queue, locks = TaskQueue(settings), LockManager(settings)
    body = {"core_id": "W1", "action": "noop", "locks": ["db:orders"]}
    first, _ = queue.enqueue(validate(body, settings), "alice")
    [claim] = queue.claim("d1", 5)
    assert locks.list()[0]["held"]["owner"] == f"task:{first['task_id']}"
    with pytest.raises(LockTimeout, match=f"held by task:{first['task_id']}"):
        locks.acquire("db:orders", "backup", ttl=30, timeout=0)

    # A flow queues for the lock; a task dispatched after it must not jump ahead.
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(
        locks.acquire("db:orders", "backup", ttl=60, timeout=60, poll_seconds=0.02)["owner"]))
    waiter.start()
    wait_until(lambda: waiting(locks, "db:orders") == ["backup"], 30, "the flow to be in line for the lock",
               interval=0.01)
    later, _ = queue.enqueue(validate(body, settings), "alice")
    queue.finish(claim, "completed")  # the task's lock goes with it
    waiter.join(60)
    assert got == ["backup"]
    assert queue.claim("d1", 5) == []  # the flow holds it now
    locks.release("db:orders", "backup")
    assert [c.task_id for c in queue.claim("d1", 5)] == [later["task_id"]]


def test_task_locks_expire_with_the_lease(settings: Settings) -> None:
    settings.dispatch.lease_seconds = 0.05
    queue = TaskQueue(settings)
    task, _ = queue.enqueue(validate({"core_id": "W1", "action": "noop", "locks": ["x"], "max_retries": 1},
                                     settings), "alice")
    queue.claim("dead-dispatcher", 1)
    settings.dispatch.lease_seconds = 60  # the next claim's lease outlasts the assertions below
    # lease expired: the task and its lock move on together
    [again] = wait_until(lambda: queue.claim("d2", 1), 30, "the dead dispatcher's lease to run out", interval=0.01)
    assert again.task_id == task["task_id"]
    assert LockManager(settings).list()[0]["held"]["owner"] == f"task:{task['task_id']}"


def test_cli_locks(settings: Settings) -> None:
    from support import run_orch

    env = {"DATABASE_URL": settings.database.url}
    locks = LockManager(settings)
    assert run_orch("locks", "list", env=env).stdout.strip() == "no locks"
    held = locks.acquire("db:orders", "backup-7", ttl=600)  # held whatever the CLI's start-up takes
    listing = run_orch("locks", "list", env=env).stdout
    assert listing.startswith(f"db:orders: held by backup-7 until {held['expires_at']}") and "1 acquisitions" in listing
    locks.extend("db:orders", "backup-7", ttl=0.05)  # its last renewal; then backup-7 dies
    wait_until(lambda: locks.list()[0]["held"] is None, 30, "backup-7's lock to expire", interval=0.01)
    assert run_orch("locks", "cleanup", env=env).stdout.strip() == "removed 1 expired lock(s)"
    locks.acquire("db:orders", "stuck", ttl=600)
    assert run_orch("locks", "release", "db:orders", env=env).stdout.strip() == "lock db:orders released"
    assert run_orch("locks", "release", "db:orders", env=env).stdout.strip() == "lock db:orders was not held"
