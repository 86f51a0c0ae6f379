"""Resource locks on SQLite and PostgreSQL: TTL, waiting order, extend/release, statistics, and the
interplay of locks held by running tasks and by flows."""

from __future__ import annotations

import threading
import time

import pytest

from orch.config.schema import Settings
from orch.dispatch.locks import LockManager, LockNotHeld, LockTimeout
from orch.dispatch.ordering import Priority
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate


def test_ttl_expiry_frees_a_dead_holders_lock(settings: Settings) -> None:
    locks = LockManager(settings)
    locks.acquire("db:orders", "backup-1", ttl=0.2)
    with pytest.raises(LockTimeout, match="held by backup-1"):
        locks.acquire("db:orders", "other", ttl=5, timeout=0)
    time.sleep(0.3)  # backup-1 "died": nobody extends its lock
    assert locks.acquire("db:orders", "other", ttl=5)["owner"] == "other"
    [entry] = locks.list()
    assert entry["stats"]["expirations"] == 1 and entry["stats"]["timeouts"] == 1
    assert entry["stats"]["acquisitions"] == 2


def test_extend_and_release_only_by_the_holder(settings: Settings) -> None:
    locks = LockManager(settings)
    first = locks.acquire("r", "alice", ttl=0.3)
    extended = locks.extend("r", "alice", ttl=60)
    assert extended["expires_at"] > first["expires_at"]
    with pytest.raises(LockNotHeld):
        locks.extend("r", "mallory", ttl=60)
    with pytest.raises(LockNotHeld):
        locks.release("r", "mallory")
    time.sleep(0.4)
    assert locks.list()[0]["held"]["owner"] == "alice"  # still held: it was extended
    assert locks.release("r", "alice") is True and locks.release("r") is False


def test_waiters_get_the_lock_by_priority_then_arrival(settings: Settings) -> None:
    locks = LockManager(settings)
    locks.acquire("r", "holder", ttl=30)
    order: list[str] = []

    def wait(owner: str, priority: Priority) -> None:
        locks.acquire("r", owner, ttl=30, priority=priority, timeout=20, poll_seconds=0.02)
        order.append(owner)
        time.sleep(0.1)
        locks.release("r", owner)

    threads = []
    for owner, priority in (("low-1", Priority.LOW), ("normal-1", Priority.NORMAL), ("critical-1", Priority.CRITICAL),
                            ("normal-2", Priority.NORMAL)):
        thread = threading.Thread(target=wait, args=(owner, priority))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)
    waiting = [w["owner"] for w in locks.list()[0]["waiting"]]
    assert waiting == ["critical-1", "normal-1", "normal-2", "low-1"]
    locks.release("r", "holder")
    for thread in threads:
        thread.join(30)
    assert order == ["critical-1", "normal-1", "normal-2", "low-1"]
    stats = locks.list()[0]["stats"]
    assert stats["acquisitions"] == 5 and stats["max_wait_seconds"] > 0


def test_hold_renews_while_the_block_runs(settings: Settings) -> None:
    locks = LockManager(settings)
    with locks.hold("orch:database", "backup", ttl=0.3, timeout=1):
        time.sleep(0.8)  # longer than the TTL: the renewer keeps it
        assert locks.list()[0]["held"]["owner"] == "backup"
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
        locks.acquire("db:orders", "backup", ttl=30, timeout=20, poll_seconds=0.02)["owner"]))
    waiter.start()
    time.sleep(0.2)
    later, _ = queue.enqueue(validate(body, settings), "alice")
    queue.finish(claim, "completed")  # the task's lock goes with it
    waiter.join(20)
    assert got == ["backup"]
    assert queue.claim("d1", 5) == []  # the flow holds it now
    locks.release("db:orders", "backup")
    assert [c.task_id for c in queue.claim("d1", 5)] == [later["task_id"]]


def test_task_locks_expire_with_the_lease(settings: Settings) -> None:
    settings.dispatch.lease_seconds = 0.1
    queue = TaskQueue(settings)
    task, _ = queue.enqueue(validate({"core_id": "W1", "action": "noop", "locks": ["x"], "max_retries": 1},
                                     settings), "alice")
    queue.claim("dead-dispatcher", 1)
    time.sleep(0.2)
    [again] = queue.claim("d2", 1)  # lease expired: the task and its lock move on together
    assert again.task_id == task["task_id"]
    assert LockManager(settings).list()[0]["held"]["owner"] == f"task:{task['task_id']}"


def test_cli_locks(settings: Settings) -> None:
    from support import run_orch

    env = {"DATABASE_URL": settings.database.url}
    assert run_orch("locks", "list", env=env).stdout.strip() == "no locks"
    held = LockManager(settings).acquire("db:orders", "backup-7", ttl=3)
    listing = run_orch("locks", "list", env=env).stdout
    assert listing.startswith(f"db:orders: held by backup-7 until {held['expires_at']}") and "1 acquisitions" in listing
    time.sleep(3.1)
    assert run_orch("locks", "cleanup", env=env).stdout.strip() == "removed 1 expired lock(s)"
    LockManager(settings).acquire("db:orders", "stuck", ttl=600)
    assert run_orch("locks", "release", "db:orders", env=env).stdout.strip() == "lock db:orders released"
    assert run_orch("locks", "release", "db:orders", env=env).stdout.strip() == "lock db:orders was not held"
