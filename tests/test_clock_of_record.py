"""One clock for correctness: leases, lock TTLs, reservations and queue order follow the database's clock
on PostgreSQL, so a host whose clock is skewed neither steals live work nor delays expired work.

The skewed host is a real second process whose clock libfaketime shifts (Debian's ``faketime``): it runs
ORCH's own queue and lock code against the same PostgreSQL database as the test, which plays the host with
the right time. Expired leases and locks are set up by writing expiry times relative to the database's
clock, so no test waits for time to pass. On SQLite (one host by definition) the clock of record is this
host's, as before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from orch.config.loader import load_settings
from orch.config.schema import Settings
from orch.dispatch.locks import LockManager
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.engine import session_scope
from orch.storage.migrate import upgrade
from orch.storage.models import CoreReservation, ResourceLock, Task
from orch.storage.types import clock_of_record, utcnow

SKEW = 60  # seconds; a host's clock this far off
SLACK = 15.0  # seconds: far more than a slow machine needs between two statements, far less than SKEW

# One "host": ORCH's queue or lock manager in a process of its own, whose clock faketime shifts.
HOST = """
import json, sys
from orch.config.loader import load_settings
from orch.dispatch.locks import LockManager, LockTimeout
from orch.dispatch.queue import TaskQueue
from orch.dispatch.request import validate
from orch.storage.types import utcnow

url, op, *args = sys.argv[1:]
settings = load_settings(environ={"DATABASE_URL": url, "ORCH_HOME": "."}, generate_secrets=False)
settings.dispatch.core_concurrency = 100
queue, locks = TaskQueue(settings), LockManager(settings)
out = {"local_now": utcnow().isoformat()}
if op == "claim":
    out["claimed"] = [claim.task_id for claim in queue.claim("skewed-host", 10)]
elif op == "renew":
    out["held"] = sorted(queue.renew("skewed-host", args))
elif op == "enqueue":
    out["task_ids"] = [view["task_id"] for view, _ in queue.enqueue_many(
        [validate({"core_id": core, "action": "noop"}, settings) for core in args], "skewed-host")]
elif op == "acquire":
    try:
        out["lock"] = locks.acquire(args[0], "skewed-host", ttl=30, timeout=0)
    except LockTimeout as exc:
        out["lock"], out["error"] = None, str(exc)
elif op == "cleanup":
    out["expired"] = locks.cleanup_expired()
print(json.dumps(out))
"""


def on_skewed_host(settings: Settings, offset: int, op: str, *args: str) -> dict[str, Any]:
    """Run ``op`` as a host whose clock is ``offset`` seconds off; its answer, checked to be skewed."""
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail("these tests need libfaketime's `faketime` (Debian package faketime) to skew a host's clock")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    done = subprocess.run([faketime, "-f", f"{offset:+d}s", sys.executable, "-c", HOST,
                           settings.database.url or "", op, *args],
                          capture_output=True, text=True, env=env, cwd=Path.cwd(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    seen_offset = (datetime.fromisoformat(answer["local_now"]) - db_now(settings)).total_seconds()
    assert abs(seen_offset - offset) < SLACK, f"the host's clock is {seen_offset:+.1f} s off, not {offset:+d} s"
    return answer


def db_now(settings: Settings) -> datetime:
    with session_scope(settings.database) as session:
        return clock_of_record(session)


@pytest.fixture
def pg_settings(isolated_env: Path, pg_url: str) -> Settings:
    loaded = load_settings(environ={"DATABASE_URL": pg_url, "ORCH_HOME": "."}, generate_secrets=False)
    loaded.dispatch.core_concurrency = 100
    upgrade(loaded.database, create_database=True)
    return loaded


def queue_tasks(queue: TaskQueue, *cores: str) -> list[str]:
    return [view["task_id"] for view, _ in queue.enqueue_many(
        [validate({"core_id": core, "action": "noop"}, queue.settings) for core in cores], "alice")]


def task_row(settings: Settings, task_id: str) -> Task:
    with session_scope(settings.database) as session:
        task = session.get(Task, task_id)
        assert task is not None
        session.expunge(task)
        return task


def expire_lease(settings: Settings, task_id: str) -> None:
    """The lease ran out a second ago by the database's clock (its holder died)."""
    with session_scope(settings.database) as session:
        session.execute(text("UPDATE tasks SET lease_expires_at = clock_timestamp() - interval '1 second' "
                             "WHERE task_id = :id"), {"id": task_id})


def test_a_host_ahead_steals_no_live_task(pg_settings: Settings) -> None:
    """A task leased elsewhere a moment ago (lease: 30 s by the database's clock) is not taken by a host
    whose clock runs 60 s ahead: by its own clock that lease lapsed half a minute ago."""
    queue = TaskQueue(pg_settings)
    [task_id] = queue_tasks(queue, "CORE_A")
    assert [c.task_id for c in queue.claim("host-b", 1)] == [task_id]

    assert on_skewed_host(pg_settings, +SKEW, "claim")["claimed"] == []
    task = task_row(pg_settings, task_id)
    assert (task.status, task.lease_owner, task.attempts) == ("running", "host-b", 1)
    assert queue.renew("host-b", [task_id]) == {task_id}


def test_a_host_behind_takes_an_expired_lease_at_once(pg_settings: Settings) -> None:
    """A lease that lapsed by the database's clock is taken back by a host 60 s behind on its next claim,
    not a minute later when its own clock catches up."""
    queue = TaskQueue(pg_settings)
    [task_id] = queue_tasks(queue, "CORE_A")
    queue.claim("host-b", 1)
    expire_lease(pg_settings, task_id)

    assert on_skewed_host(pg_settings, -SKEW, "claim")["claimed"] == [task_id]
    task = task_row(pg_settings, task_id)
    assert (task.status, task.lease_owner, task.attempts) == ("running", "skewed-host", 2)


@pytest.mark.parametrize("offset", [+SKEW, -SKEW])
def test_leases_a_skewed_host_stamps_run_by_the_database_clock(pg_settings: Settings, offset: int) -> None:
    """The lease a skewed host stamps on its claim and on its renewal ends ``lease_seconds`` after now by
    the database's clock: one ahead would otherwise hold a dead claim a minute too long, one behind would
    lose live claims to everyone else at once."""
    queue = TaskQueue(pg_settings)
    [task_id] = queue_tasks(queue, "CORE_A")
    lease = timedelta(seconds=pg_settings.dispatch.lease_seconds)

    before = db_now(pg_settings)
    assert on_skewed_host(pg_settings, offset, "claim")["claimed"] == [task_id]
    after = db_now(pg_settings)
    assert before + lease <= task_row(pg_settings, task_id).lease_expires_at <= after + lease

    before = db_now(pg_settings)
    assert on_skewed_host(pg_settings, offset, "renew", task_id)["held"] == [task_id]
    after = db_now(pg_settings)
    assert before + lease <= task_row(pg_settings, task_id).lease_expires_at <= after + lease


def test_a_host_ahead_takes_no_unexpired_lock(pg_settings: Settings) -> None:
    """A lock held for 30 s is neither taken nor cleaned up by a host 60 s ahead."""
    locks = LockManager(pg_settings)
    locks.acquire("db:orders", "host-b", ttl=30)

    answer = on_skewed_host(pg_settings, +SKEW, "acquire", "db:orders")
    assert answer["lock"] is None and "held by host-b" in answer["error"]
    assert on_skewed_host(pg_settings, +SKEW, "cleanup")["expired"] == 0
    assert locks.extend("db:orders", "host-b", ttl=30)["owner"] == "host-b"


def test_a_host_behind_takes_an_expired_lock_at_once(pg_settings: Settings) -> None:
    """A lock whose TTL ran out by the database's clock goes to a host 60 s behind at once, and the lock
    it takes expires ``ttl`` after now by the database's clock."""
    locks = LockManager(pg_settings)
    locks.acquire("db:orders", "host-b", ttl=30)
    with session_scope(pg_settings.database) as session:
        session.execute(text("UPDATE resource_locks SET expires_at = clock_timestamp() - interval '1 second'"))

    before = db_now(pg_settings)
    lock = on_skewed_host(pg_settings, -SKEW, "acquire", "db:orders")["lock"]
    after = db_now(pg_settings)
    assert lock is not None and lock["owner"] == "skewed-host"
    assert before + timedelta(seconds=30) <= datetime.fromisoformat(lock["expires_at"]) <= after + timedelta(seconds=30)

    locks.acquire("db:backup", "host-b", ttl=30)
    with session_scope(pg_settings.database) as session:
        session.execute(text("UPDATE resource_locks SET expires_at = clock_timestamp() - interval '1 second' "
                             "WHERE resource = 'db:backup'"))
    assert on_skewed_host(pg_settings, -SKEW, "cleanup")["expired"] == 1


def test_queue_order_is_the_database_clocks_whoever_enqueues(pg_settings: Settings) -> None:
    """Tasks run in the order they were queued by the database's clock: a host 60 s behind does not put
    its later tasks ahead of earlier ones, and one 60 s ahead does not put its earlier tasks behind later
    ones (on the enqueuer's clocks each would be a minute off)."""
    queue = TaskQueue(pg_settings)
    first = queue_tasks(queue, "CORE_A")
    behind = on_skewed_host(pg_settings, -SKEW, "enqueue", "CORE_A", "CORE_A")["task_ids"]
    ahead = on_skewed_host(pg_settings, +SKEW, "enqueue", "CORE_A")["task_ids"]
    [single_behind] = on_skewed_host(pg_settings, -SKEW, "enqueue", "CORE_A")["task_ids"]
    last = queue_tasks(queue, "CORE_A")

    expected = first + behind + ahead + [single_behind] + last
    assert [c.task_id for c in queue.claim("host-b", len(expected))] == expected
    with session_scope(pg_settings.database) as session:
        keys = dict(session.execute(select(Task.task_id, Task.sort_key)).all())
    now = db_now(pg_settings).timestamp()
    aging = pg_settings.dispatch.aging_seconds  # every task is "normal": one level of aging ahead of its time
    assert all(now - SLACK <= keys[task_id] + aging <= now for task_id in expected)


def test_a_stay_reservation_runs_by_the_database_clock(pg_settings: Settings) -> None:
    """A ``stay`` task's reservation ends ``stay_seconds`` after its end by the database's clock, whoever
    ended it; and the claim a host 60 s ahead makes honours a reservation still live by that clock."""
    queue = TaskQueue(pg_settings)
    [stay] = [view["task_id"] for view, _ in queue.enqueue_many(
        [validate({"core_id": "CORE_A", "action": "noop", "stay": True}, pg_settings)], "alice")]
    [claim] = queue.claim("host-b", 1)
    before = db_now(pg_settings)
    assert queue.finish(claim, "completed")
    after = db_now(pg_settings)
    stay_for = timedelta(seconds=pg_settings.dispatch.stay_seconds)
    with session_scope(pg_settings.database) as session:
        reservation = session.get(CoreReservation, "CORE_A")
        assert reservation is not None and before + stay_for <= reservation.expires_at <= after + stay_for
        session.execute(text("UPDATE core_reservations SET expires_at = clock_timestamp() + interval '20 seconds'"))
    assert task_row(pg_settings, stay).status == "completed"

    queue.enqueue(validate({"core_id": "CORE_A", "action": "noop"}, pg_settings), "bob")
    assert on_skewed_host(pg_settings, +SKEW, "claim")["claimed"] == []  # bob's task waits for alice's stay


def test_sqlite_keeps_this_hosts_clock(isolated_env: Path) -> None:
    """On SQLite (one file, one host) the clock of record is this host's, as it always was, and costs no
    statement; leases are stamped from it."""
    loaded = load_settings(environ={"DATABASE_URL": f"sqlite:///{isolated_env / 'orch.db'}", "ORCH_HOME": "."},
                           generate_secrets=False)
    upgrade(loaded.database, create_database=True)
    queue = TaskQueue(loaded)
    [task_id] = queue_tasks(queue, "CORE_A")
    before = utcnow()
    with session_scope(loaded.database) as session:
        assert before <= clock_of_record(session) <= utcnow()
    queue.claim("host-b", 1)
    lease = timedelta(seconds=loaded.dispatch.lease_seconds)
    assert before + lease <= task_row(loaded, task_id).lease_expires_at <= utcnow() + lease
    with session_scope(loaded.database) as session:
        assert session.scalar(select(ResourceLock)) is None
