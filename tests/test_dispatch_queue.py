"""The task queue on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, select
from support import run_orch, wait_until

from orch.config.schema import CoreSettings, Settings
from orch.dispatch.errors import InvalidTask, InvalidTransition, QueueFull, TaskNotFound
from orch.dispatch.queue import Claim, TaskQueue
from orch.dispatch.request import validate
from orch.storage import json_columns
from orch.storage.engine import get_engine, session_scope
from orch.storage.migrate import upgrade
from orch.storage.models import Task


def put(queue: TaskQueue, owner: str = "alice", **body: Any) -> dict[str, Any]:
    body.setdefault("core_id", "WORK_AI_01")
    body.setdefault("action", "noop")
    task, _ = queue.enqueue(validate(body, queue.settings), owner)
    return task


def claimed_ids(queue: TaskQueue, limit: int = 100, owner: str = "d1") -> list[str]:
    return [claim.task_id for claim in queue.claim(owner, limit)]


@contextmanager
def statements_sent(queue: TaskQueue) -> Iterator[list[str]]:
    """The SQL statements the queue's engine sends meanwhile, in order."""
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        sent.append(statement)

    engine = get_engine(queue.database)
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", note)


def event_types(queue: TaskQueue, task_id: str) -> list[str]:
    return [event["event_type"] for event in queue.events(task_id)]


def test_priority_order_then_fifo(settings: Settings) -> None:
    queue = TaskQueue(settings)
    low = put(queue, priority="low")
    normal1 = put(queue, priority="normal")
    high = put(queue, priority=2)
    critical = put(queue, priority="critical")
    normal2 = put(queue)
    assert claimed_ids(queue) == [t["task_id"] for t in (critical, high, normal1, normal2, low)]


def test_aging_lets_an_old_low_task_pass_newer_critical_ones(settings: Settings) -> None:
    """With one level gained per microsecond, a low task dispatched before a critical one is older by far
    more than the three levels between them (each dispatch is a database transaction), so it runs first:
    the order is made by the order of the calls, not by sleeping between them. With the default aging
    the same two tasks run critical first (test_priority_order_then_fifo)."""
    settings.dispatch.aging_seconds = 1e-6
    queue = TaskQueue(settings)
    low = put(queue, priority="low")
    critical = put(queue, priority="critical")
    assert claimed_ids(queue) == [low["task_id"], critical["task_id"]]


def test_per_core_and_global_limits(settings: Settings) -> None:
    settings.dispatch.core_concurrency = 1
    settings.dispatch.cores = {"WORK_AI_01": CoreSettings(), "WORK_AI_02": CoreSettings(concurrency=2)}
    queue = TaskQueue(settings)
    a = [put(queue, core_id="WORK_AI_01") for _ in range(3)]
    b = [put(queue, core_id="WORK_AI_02") for _ in range(3)]
    first = queue.claim("d1", 10)
    assert sorted(c.task_id for c in first) == sorted([a[0]["task_id"], b[0]["task_id"], b[1]["task_id"]])
    assert queue.claim("d1", 10) == []  # both cores full
    queue.finish(first[0], "completed")
    assert len(queue.claim("d1", 10)) == 1

    settings.features.max_concurrent_tasks = 4
    settings.dispatch.cores = {}
    settings.dispatch.core_concurrency = 100
    for _ in range(5):
        put(queue, core_id="WORK_AI_03")
    running = len(queue.list(status="running"))
    assert len(queue.claim("d1", 10)) == 4 - running


def test_a_claim_stops_reading_the_queue_once_the_cores_it_found_are_full(settings: Settings) -> None:
    """A dispatcher with room for more than the free cores can take read the whole backlog of those cores
    at every claim, a page at a time, skipping row by row the tasks of a core it had just filled: with
    thousands queued, most of its CPU per task. A core that fills is now left out by the database, so a
    claim reads what it takes and little more, however long the queue."""
    settings.dispatch.core_concurrency = 1
    queue = TaskQueue(settings)
    for core in ("WORK_AI_01", "WORK_AI_02"):
        queue.enqueue_many([validate({"core_id": core, "action": "noop"}, settings) for _ in range(600)], "alice")
    with statements_sent(queue) as sent:
        first = queue.claim("d1", 16)
    assert sorted(claim.core_id for claim in first) == ["WORK_AI_01", "WORK_AI_02"]
    # One page found the first core's task; the next left that core out and found the other's.
    pages = sum("ORDER BY tasks.sort_key" in statement for statement in sent)
    assert pages <= 3, f"{pages} pages of the queue read for a claim of 2 tasks"
    queue.finish(first[0], "completed")
    assert [claim.core_id for claim in queue.claim("d1", 16)] == [first[0].core_id]


def test_a_claim_of_many_tasks_reads_one_page_and_writes_one_statement_per_table(settings: Settings) -> None:
    """Eight cores with a task each free: a claim of 8 read the queue again after every pick that filled
    a core (9 pages), and wrote each task's update and ``task.started`` event one statement at a time,
    flushing the task before its event: 16 writes. All of that held SQLite's write turn, which the API's
    dispatches wait for. Now the page is read on, and the moves are written together."""
    settings.dispatch.core_concurrency = 1
    queue = TaskQueue(settings)
    ids = [put(queue, core_id=f"WORK_AI_{number % 8:02d}")["task_id"] for number in range(16)]
    with statements_sent(queue) as statements:
        claims = queue.claim("d1", 8)
    assert [claim.task_id for claim in claims] == ids[:8]
    assert sum("ORDER BY tasks.sort_key" in statement for statement in statements) == 1
    assert sum(statement.startswith("UPDATE tasks") for statement in statements) == 1
    assert sum(statement.startswith("INSERT INTO task_events") for statement in statements) == 1
    for claim in claims:
        assert event_types(queue, claim.task_id)[-1] == "task.started"
        queue.finish(claim, "completed")
    assert [claim.task_id for claim in queue.claim("d1", 8)] == ids[8:]


def test_locks_make_tasks_wait_in_queue_order(settings: Settings) -> None:
    queue = TaskQueue(settings)
    first = put(queue, core_id="A", locks=["db:orders"])
    second = put(queue, core_id="B", locks=["db:orders", "db:users"])
    other = put(queue, core_id="C", locks=["db:users"])
    claims = queue.claim("d1", 10)
    assert [c.task_id for c in claims] == [first["task_id"], other["task_id"]]
    for claim in claims:
        queue.finish(claim, "completed")
    assert claimed_ids(queue) == [second["task_id"]]


def test_idempotency_key_per_owner(settings: Settings) -> None:
    queue = TaskQueue(settings)
    request = validate({"core_id": "WORK_AI_01", "action": "noop", "idempotency_key": "k-1"}, settings)
    first, created = queue.enqueue(request, "alice")
    again, created_again = queue.enqueue(request, "alice")
    other, created_other = queue.enqueue(request, "bob")
    assert created and not created_again and created_other
    assert again["task_id"] == first["task_id"] != other["task_id"]
    assert queue.depth()["normal"] == 2


def test_task_ids_are_uuids_in_the_order_tasks_were_made(settings: Settings) -> None:
    """Time-ordered ids (UUIDv7): a batch's rows land together at the end of the id indexes (the tasks
    table's key, the events' task index) instead of on a page each, which was most of a batch's commit."""
    queue = TaskQueue(settings)
    made = [put(queue, core_id=f"WORK_AI_{n % 3:02d}")["task_id"] for n in range(5)]
    made += [view["task_id"] for view, _ in queue.enqueue_many(
        [validate({"core_id": f"WORK_AI_{n:02d}", "action": "noop"}, settings) for n in range(50)], "alice")]
    made.append(put(queue)["task_id"])
    assert made == sorted(made) and len(set(made)) == len(made)
    assert {uuid.UUID(task_id).version for task_id in made} == {7}


@pytest.mark.parametrize("size", [1, 50])
def test_the_estimate_reads_the_counts_the_database_keeps(settings: Settings, size: int) -> None:
    """Counting a core's queue for the estimated wait grew with its backlog (3.4-4x the empty queue's
    accept with 100,000 queued on the core). The estimate now reads the counts kept in ``core_load``:
    no statement of an accept counts a core's tasks without a bound, and the estimate is unchanged."""
    settings.dispatch.core_concurrency = 1
    queue = TaskQueue(settings)
    for _round in range(3):  # three tasks ahead on each core, one slot each (core_concurrency 1)
        queue.enqueue_many([validate({"core_id": f"WORK_AI_{core:02d}", "action": "noop"}, settings)
                            for core in range(50)], "alice")
    batch = [validate({"core_id": f"WORK_AI_{core:02d}", "action": "noop"}, settings) for core in range(size)]
    with statements_sent(queue) as statements:
        accepted = queue.enqueue_many(batch, "alice")
    unbounded = [s for s in statements if "FROM tasks" in s and s.count("count(") > s.count("LIMIT")]
    assert unbounded == []
    assert {view["estimated_wait_seconds"] for view, _ in accepted} == {3.0}  # 3 ahead x 1 s (no history yet)


def test_json_columns_keep_what_the_caller_sent_exactly(settings: Settings) -> None:
    """JSON columns are written by orjson, which refuses an integer beyond 64 bits: such a value is
    written by the standard library instead, exactly, and the task is queued as sent."""
    queue = TaskQueue(settings)
    sent = {"huge": 2**70 + 1, "small": -(2**63), "text": "é\u2028", "list": [1.5, None, True], "nested": {"k": {}}}
    task = put(queue, metadata=sent)
    with session_scope(settings.database) as session:
        stored = session.get(Task, task["task_id"])
        assert stored is not None and {key: stored.meta[key] for key in sent} == sent
    assert json_columns.dumps({1: "a"}) == '{"1":"a"}'  # a key that is not text is written as the library would


def test_backpressure_refuses_beyond_the_depth_limit(settings: Settings) -> None:
    settings.dispatch.max_queue_depth = 2
    queue = TaskQueue(settings)
    put(queue)
    put(queue)
    with pytest.raises(QueueFull) as caught:
        put(queue)
    assert caught.value.retry_after == settings.dispatch.retry_after_seconds
    assert str(caught.value) == "queue full: 2 tasks queued (limit 2); retry after 5 s"
    with pytest.raises(QueueFull):  # a batch is all or nothing
        queue.enqueue_many([validate({"core_id": "X", "action": "noop"}, settings)] * 2, "alice")
    assert sum(queue.depth().values()) == 2


def test_the_depth_limit_reads_the_counts_the_database_keeps(settings: Settings) -> None:
    """The depth for the limit was the queued tasks counted up to one past the limit, as many rows as were
    queued, on every accept (17 % of the API's group writer on PostgreSQL with some thousands queued).
    It is now the sum of the counts ``core_load`` keeps: no statement of an accept counts the queued tasks
    of every core, and the limit is as exact as before, with more rows of history than the limit."""
    settings.dispatch.max_queue_depth = 30
    queue = TaskQueue(settings)
    ended = [put(queue, core_id=f"WORK_AI_{n % 4:02d}")["task_id"] for n in range(25)]
    with session_scope(settings.database, write_lock=True) as session:  # history: rows that are not queued
        for task in session.scalars(select(Task).where(Task.task_id.in_(ended))):
            task.status = "cancelled"
    for n in range(27):
        put(queue, core_id=f"WORK_AI_{n % 4:02d}")
    with statements_sent(queue) as statements:
        put(queue, core_id="WORK_AI_01")  # the 28th
        queue.enqueue_many([validate({"core_id": f"WORK_AI_0{n}", "action": "noop"}, settings)
                            for n in (2, 3)], "alice")  # the 29th and 30th
    counted = [s for s in statements if "FROM tasks" in s and "count(" in s and "tasks.core_id" not in s]
    assert counted == []
    with pytest.raises(QueueFull) as caught:
        put(queue, core_id="WORK_AI_03")
    assert caught.value.depth == 30
    assert sum(queue.depth().values()) == 30


@pytest.mark.parametrize("body, expected", [
    ({"core_id": "W1", "action": "reboot"}, "action: unknown action 'reboot'"),
    ({"core_id": "W1", "action": "noop", "timeout": -5}, "timeout: must be greater than 0"),
    ({"core_id": "W1", "action": "sleep", "params": {"seconds": "soon"}}, "params.seconds: must be a valid number"),
    ({"core_id": "W1", "action": "shell", "params": {"argv": ["rm", "-rf", "/"]}},
     "params.argv.0: 'rm' is not allow-listed"),
    ({"core_id": "W1", "action": "http", "params": {"url": "http://evil.example/"}},
     "params.url: host 'evil.example' is not allow-listed"),
    ({"core_id": "W1", "action": "external", "params": {"blob": "x" * 70000}}, "params: 700"),
    ({"core_id": "bad core!", "action": "noop"}, "core_id: must match"),
    ({"coreId": "W1", "action": "noop", "priority": "urgent"}, "priority: must be one of critical, high, normal, low"),
    ({"core_id": "W1", "action": "noop", "locks": ["a", "a"]}, "locks: must not name a lock twice"),
    ({"core_id": "W1", "action": "noop", "colour": "red"}, "colour: unknown field"),
    ({"core_id": "W1", "action": "run-deployment", "params": {"name": "ops-report/daily", "parameters": {
        "note": "a\x00b"}}}, "params.parameters.note: contains a NUL character, which cannot be stored"),
    ({"core_id": "W1", "action": "noop", "metadata": {"tags": ["ok", "x\x00"]}},
     "metadata.tags.1: contains a NUL character, which cannot be stored"),
    ({"core_id": "W1", "action": "noop", "metadata": {"ratio": float("inf")}},
     "metadata.ratio: must be a finite number"),
    ({"core_id": "W1", "action": "run-deployment", "params": {"name": "ops-report/daily", "parameters": {
        "r": [1.5, float("nan")]}}}, "params.parameters.r.1: must be a finite number"),
])
def test_bad_input_is_refused_and_nothing_is_queued(settings: Settings, body: dict[str, Any],
                                                    expected: str) -> None:
    queue = TaskQueue(settings)
    with pytest.raises(InvalidTask) as caught:
        queue.enqueue(validate(body, settings), "alice")
    assert any(line.startswith(expected) for line in caught.value.errors), caught.value.errors
    assert queue.list() == []


def test_the_cli_refuses_a_number_json_has_not_in_one_line(settings: Settings) -> None:
    """``--params-json`` is read by Python's parser, which takes ``-Infinity``: the task was queued with null
    in its place (the API now refuses the same body before any route, as this does)."""
    upgrade(settings.database)
    refused = run_orch("dispatch", "--core", "W1", "--action", "run-deployment", "--params-json",
                       '{"name": "ops-report/daily", "parameters": {"floor": -Infinity}}',
                       env={"DATABASE_URL": settings.database.url or ""})
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: invalid task: params.parameters.floor: must be a finite number (JSON has no NaN or Infinity, and a "
        "double holds at most 1.8e308)")
    assert TaskQueue(settings).list() == []


def test_the_cli_refuses_a_nul_in_params_in_one_line(settings: Settings) -> None:
    """The API refuses a NUL before any route; the CLI reads ``--params-json`` itself and queued such a task,
    which PostgreSQL's text and Prefect's parameters cannot hold. A backslash spelled out is only text."""
    env = {"DATABASE_URL": settings.database.url or ""}
    upgrade(settings.database)
    refused = run_orch("dispatch", "--core", "W1", "--action", "run-deployment", "--params-json",
                       '{"name": "ops-report/daily", "parameters": {"note": "a\\u0000b"}}', env=env)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "error: invalid task: params.parameters.note: contains a NUL character, which cannot be stored")
    assert TaskQueue(settings).list() == []
    spelled = run_orch("dispatch", "--core", "W1", "--action", "run-deployment", "--params-json",
                       '{"name": "ops-report/daily", "parameters": {"note": "a\\\\u0000b"}}', env=env)
    assert spelled.returncode == 0, spelled.stderr
    assert [t["params"]["parameters"]["note"] for t in TaskQueue(settings).list()] == ["a\\u0000b"]


def test_unknown_core_refused_when_cores_are_declared(settings: Settings) -> None:
    settings.dispatch.cores = {"WORK_AI_01": CoreSettings()}
    with pytest.raises(InvalidTask) as caught:
        validate({"core_id": "WORK_AI_09", "action": "noop"}, settings)
    assert caught.value.errors == ["core_id: unknown core 'WORK_AI_09'; declared: WORK_AI_01"]


def test_original_body_defaults_to_an_external_task(settings: Settings) -> None:
    task = validate({"coreId": "WORK_AI_01", "stay": True, "priority": 1, "timeout": 300,
                     "metadata": {"source": "ps", "user_id": "u1", "tags": ["a"]}}, settings)
    assert (task.action, task.priority.label, task.stay, task.timeout) == ("external", "normal", True, 300)


def test_lease_expiry_retries_and_completion_happens_once(settings: Settings) -> None:
    settings.dispatch.lease_seconds = 0.05
    queue = TaskQueue(settings)
    task = put(queue, max_retries=1)
    [dead] = queue.claim("dispatcher-that-dies", 1)
    [alive] = wait_until(lambda: queue.claim("d2", 1), 30, "the dead dispatcher's lease to run out", interval=0.01)
    assert (alive.task_id, alive.attempt) == (task["task_id"], 2)
    assert queue.finish(dead, "completed", result={"late": True}) is False  # the dead one's report is stale
    assert queue.finish(alive, "completed", result={"ok": True}) is True
    assert queue.finish(alive, "completed") is False  # a duplicate report changes nothing
    done = queue.get(task["task_id"])
    assert (done["status"], done["attempts"], done["result"]) == ("completed", 2, {"ok": True})
    assert event_types(queue, task["task_id"]) == [
        "task.created", "task.started", "task.retrying", "task.started", "task.completed"]


def test_lease_expiry_without_retries_left_fails(settings: Settings) -> None:
    settings.dispatch.lease_seconds = 0.05
    queue = TaskQueue(settings)
    task = put(queue, max_retries=0)
    queue.claim("d1", 1)

    def swept() -> bool:  # every claim sweeps expired leases; this one finds nothing to run
        assert queue.claim("d1", 1) == []
        return bool(queue.get(task["task_id"])["status"] != "running")

    wait_until(swept, 30, "the lease to run out", interval=0.01)
    failed = queue.get(task["task_id"])
    assert failed["status"] == "failed" and failed["error"] == "lease expired after 1 attempt(s)"


def test_in_process_retry_counts_attempts(settings: Settings) -> None:
    queue = TaskQueue(settings)
    task = put(queue, max_retries=2)
    [claim] = queue.claim("d1", 1)
    second = queue.retrying(claim, "boom", delay=1.0)
    assert second is not None and second.attempt == 2 and second.retries_left == 1
    assert queue.retrying(claim, "stale", delay=1.0) is None  # the first attempt's claim is spent
    assert queue.finish(second, "failed", error="boom again")
    failed = queue.get(task["task_id"])
    assert (failed["status"], failed["attempts"], failed["error"]) == ("failed", 2, "boom again")


def test_cancel(settings: Settings) -> None:
    queue = TaskQueue(settings)
    queued = put(queue)
    assert queue.cancel(queued["task_id"], "ops")["status"] == "cancelled"
    running = put(queue)
    [claim] = queue.claim("d1", 1)
    queue.cancel(running["task_id"], "ops")
    assert queue.finish(claim, "completed") is False
    assert queue.get(running["task_id"])["status"] == "cancelled"
    with pytest.raises(InvalidTransition, match="is already cancelled"):
        queue.cancel(running["task_id"], "ops")
    with pytest.raises(TaskNotFound):
        queue.cancel("no-such-task", "ops")


def test_reset_failed_requeues_with_fresh_attempts(settings: Settings) -> None:
    queue = TaskQueue(settings)
    task = put(queue, max_retries=0)
    [claim] = queue.claim("d1", 1)
    queue.finish(claim, "failed", error="disk full")
    assert queue.reset_failed("ops") == [task["task_id"]]
    again = queue.get(task["task_id"])
    assert (again["status"], again["attempts"], again["error"]) == ("queued", 0, None)
    assert queue.reset_failed("ops") == []
    assert event_types(queue, task["task_id"])[-1] == "task.retrying"


def test_stay_reserves_the_core_for_its_owner(settings: Settings) -> None:
    settings.dispatch.core_concurrency = 1
    queue = TaskQueue(settings)
    put(queue, owner="alice", stay=True)
    [claim] = queue.claim("d1", 1)
    queue.finish(claim, "completed")
    bobs = put(queue, owner="bob")
    alices = put(queue, owner="alice")
    [alice_claim] = queue.claim("d1", 10)
    assert alice_claim.task_id == alices["task_id"]  # bob's is older, but the core stays alice's
    queue.finish(alice_claim, "completed")
    assert queue.release_core("WORK_AI_01", "ops") is True
    assert claimed_ids(queue) == [bobs["task_id"]]


def test_depth_by_priority(settings: Settings) -> None:
    queue = TaskQueue(settings)
    put(queue, priority="high")
    put(queue, priority="high")
    put(queue, priority="low")
    assert queue.depth() == {"critical": 0, "high": 2, "normal": 0, "low": 1}


CLAIMER = """
import json, sys, time
from pathlib import Path
from orch.config.loader import load_settings
from orch.dispatch.queue import Claim, TaskQueue

settings = load_settings(environ={"DATABASE_URL": sys.argv[1], "ORCH_HOME": "."}, generate_secrets=False)
barrier = Path(sys.argv[3])
(barrier / sys.argv[2]).touch()  # start together, so the two really compete for the same tasks
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.01)
settings.dispatch.core_concurrency = 1000
settings.features.max_concurrent_tasks = 1000
queue, me, done, idle = TaskQueue(settings), sys.argv[2], [], 0
while idle < 20:
    claims = queue.claim(me, 7)
    idle = 0 if claims else idle + 1
    for claim in claims:
        if queue.finish(claim, "completed", result={"by": me}):
            done.append(claim.task_id)
    if not claims:
        time.sleep(0.02)
print(json.dumps(done))
"""


def test_two_dispatcher_processes_never_run_the_same_task(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess
    import sys

    from sqlalchemy import func, select

    from orch.storage.engine import session_scope
    from orch.storage.models import TaskEvent

    queue = TaskQueue(settings)
    batch = [validate({"core_id": f"W{i % 5}", "action": "noop"}, settings) for i in range(300)]
    ids = {task["task_id"] for task, _ in queue.enqueue_many(batch, "alice")}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", CLAIMER, settings.database.url, f"d{n}", str(barrier)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (1, 2)]
    results = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err for _, err in results]
    done = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert set(done[0]).isdisjoint(done[1])
    assert set(done[0]) | set(done[1]) == ids
    if not settings.database.url.startswith("sqlite"):
        # PostgreSQL queues lock waiters, so both share the work. SQLite's busy handler is not fair: a
        # dispatcher that re-takes the write lock at once can keep the other waiting for the whole run.
        # Safe (nothing runs twice), but on SQLite one dispatcher per database is the deployment to use.
        assert done[0] and done[1], "both dispatchers should have taken work"
    with session_scope(settings.database) as session:
        per_task = session.execute(select(TaskEvent.task_id, func.count()).where(
            TaskEvent.event_type == "task.completed").group_by(TaskEvent.task_id)).all()
    assert len(per_task) == 300 and {count for _, count in per_task} == {1}


def test_external_tasks_are_claimed_by_their_core_and_time_out(settings: Settings) -> None:
    queue = TaskQueue(settings)
    task = put(queue, action="external", core_id="WORK_AI_07", timeout=1, max_retries=0)
    assert queue.claim("dispatcher", 10) == []  # a dispatcher never runs external work
    assert queue.claim("core", 10, external_core="WORK_AI_08") == []
    [claim] = queue.claim("core:WORK_AI_07", 10, external_core="WORK_AI_07")
    assert claim.task_id == task["task_id"]

    def swept() -> bool:  # the core went silent: any dispatcher's claim, once the timeout has run out, ends it
        assert queue.claim("dispatcher", 10) == []
        return bool(queue.get(task["task_id"])["status"] != "running")

    wait_until(swept, 30, "the external task's 1 s timeout to run out", interval=0.01)
    timed_out = queue.get(task["task_id"])
    assert (timed_out["status"], timed_out["error"]) == ("timed_out", "timeout after 1 attempt(s)")
    assert queue.finish(claim, "completed") is False  # a late report changes nothing


def test_completed_duration_is_the_last_attempts(settings: Settings) -> None:
    """The duration is the finishing attempt's: from its own ``task.started`` to the end, not from the
    first, abandoned attempt a lease earlier. Checked against the stored times, not a stopwatch."""
    settings.dispatch.lease_seconds = 0.2
    queue = TaskQueue(settings)
    task = put(queue, max_retries=1)
    queue.claim("dies", 1)
    [second] = wait_until(lambda: queue.claim("d2", 1), 30, "the abandoned attempt's lease to run out", interval=0.01)
    queue.finish(second, "completed")
    ended = queue.get(task["task_id"])
    first_start, finished = (datetime.fromisoformat(ended[key]) for key in ("started_at", "finished_at"))
    events = queue.events(task["task_id"])
    second_start = datetime.fromisoformat([e for e in events if e["event_type"] == "task.started"][-1]["timestamp"])
    [done] = [e for e in events if e["event_type"] == "task.completed"]
    assert (second_start - first_start).total_seconds() > 0.2  # the lease ran out in between
    assert done["data"]["duration"] == round((finished - second_start).total_seconds(), 3)


LEASE_HOLDER = """
import sys
from orch.config.loader import load_settings
from orch.dispatch.lease_owner import dispatcher_id
from orch.dispatch.queue import Claim, TaskQueue
settings = load_settings(environ={"ORCH_HOME": sys.argv[1], "DATABASE_URL": sys.argv[2]}, generate_secrets=False)
settings.dispatch.lease_seconds = 3600
(claim,) = TaskQueue(settings).claim(dispatcher_id(), 1)
print(claim.task_id, claim.lease_owner, flush=True)
sys.stdin.read()  # holds the lease until killed
"""


def test_a_killed_dispatchers_leases_are_released_by_its_successor_at_once(settings: Settings, tmp_path: Any) -> None:
    """Issue 15: a dispatcher SIGKILLed with an hour-long lease; its successor on this host hands its task
    back at once (the pid is gone), while a live holder's lease and a lease of another host or boot stay."""
    import signal
    import subprocess
    import sys

    from orch.dispatch import lease_owner

    settings.dispatch.lease_seconds = 3600
    queue = TaskQueue(settings)
    task = put(queue)
    url = settings.database.url or ""
    claimer = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(tmp_path), url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        task_id, owner = claimer.stdout.readline().split()  # type: ignore[union-attr]
        assert task_id == task["task_id"] and lease_owner.gone(owner) is None  # alive: its lease holds
        assert queue.release_dead_leases() == 0
        claimer.send_signal(signal.SIGKILL)
        claimer.wait(timeout=30)
    finally:
        claimer.kill()
    assert lease_owner.gone(owner) is not None
    other_host = put(queue)
    (held,) = queue.claim(f"elsewhere:{claimer.pid}:abcdef:{lease_owner.boot_id()}", 1)
    assert held.task_id == other_host["task_id"]
    assert queue.release_dead_leases() == 1  # the dead one only
    assert queue.get(task["task_id"])["status"] == "queued"
    assert queue.get(other_host["task_id"])["status"] == "running"
    retrying = [e for e in queue.events(task["task_id"]) if e["event_type"] == "task.retrying"]
    assert f"pid {claimer.pid} no longer exists" in retrying[-1]["data"]["reason"]
    # The same dead pid under another boot id is not provably gone: it may be another machine's.
    other_boot = owner.rsplit(":", 1)[0] + ":00000000"
    assert lease_owner.gone(other_boot) is None and lease_owner.gone("core:WORK_AI_01") is None


def test_depth_limit_counts_only_as_far_as_it_needs(settings: Settings) -> None:
    """The limit is exact whatever else the table holds: finished tasks (rows the SQLite bound sees) leave
    room, queued ones fill it, and a queue left above a limit lowered since says so."""
    settings.dispatch.max_queue_depth = 3
    queue = TaskQueue(settings)
    for _ in range(3):  # three rows in the table, none of them queued
        put(queue)
        (claim,) = queue.claim("d1", 1)
        assert queue.finish(claim, "completed")
    for _ in range(3):
        put(queue)
    with pytest.raises(QueueFull) as caught:
        put(queue)
    assert str(caught.value) == "queue full: 3 tasks queued (limit 3); retry after 5 s"
    settings.dispatch.max_queue_depth = 2
    with pytest.raises(QueueFull) as caught:
        put(queue)
    assert str(caught.value) == "queue full: 3 tasks queued (limit 2); retry after 5 s"
    assert sum(queue.depth().values()) == 3


def finish_together(queue: TaskQueue, ends: list[tuple[Claim, dict[str, Any]]]) -> tuple[list[Any], int]:
    """Each end from a thread of its own, the way a dispatcher's task threads end their attempts: the first
    while its write is held up (the test holds its task's row, and on SQLite the write turn), the rest while
    it waits. Returns each end's answer (or exception) and how many transactions committed meanwhile."""
    answers: list[Any] = [None] * len(ends)
    commits = [0]

    def count(_connection: Any) -> None:
        commits[0] += 1

    def end(index: int) -> None:
        claim, options = ends[index]
        try:
            answers[index] = queue.finish(claim, options.pop("status", "completed"), **options)
        except Exception as exc:  # noqa: BLE001 - the answer under test
            answers[index] = exc

    engine = get_engine(queue.database)
    event.listen(engine, "commit", count)
    threads = [threading.Thread(target=end, args=(index,)) for index in range(len(ends))]
    try:
        with session_scope(queue.database, write_lock=True) as blocker:
            blocker.execute(select(Task).where(Task.task_id == ends[0][0].task_id).with_for_update()).all()
            threads[0].start()
            wait_until(lambda: queue._ends._writing, 30, "the first end's write")
            for thread in threads[1:]:
                thread.start()
            wait_until(lambda: len(queue._ends._pending) == len(ends) - 1, 30, "the other ends waiting")
        for thread in threads:
            thread.join(60)
    finally:
        event.remove(engine, "commit", count)
    return answers, commits[0] - 1  # less the blocker's own


def test_attempt_ends_arriving_together_share_a_transaction(settings: Settings) -> None:
    """A dispatcher's ends took the write turn once per task; those that wait for one now share the next
    transaction, and each still gets its own answer: a cancelled task's end is stale (False)."""
    queue = TaskQueue(settings)
    tasks = [put(queue, core_id=f"WORK_AI_{n:02d}") for n in range(6)]
    claims = {claim.task_id: claim for claim in queue.claim("d1", 10)}
    queue.cancel(tasks[4]["task_id"], "alice")
    ends = [(claims[task["task_id"]], {"result": {"n": n}}) for n, task in enumerate(tasks)]
    ends[5][1].update(status="failed", error="boom")
    answers, commits = finish_together(queue, ends)
    assert answers == [True, True, True, True, False, True]
    assert commits == 2  # the first end alone, then the five that waited for it
    assert [queue.get(t["task_id"])["status"] for t in tasks] == ["completed"] * 4 + ["cancelled", "failed"]
    assert queue.get(tasks[2]["task_id"])["result"] == {"n": 2}
    assert event_types(queue, tasks[3]["task_id"])[-1] == "task.completed"
    assert event_types(queue, tasks[4]["task_id"])[-1] == "task.cancelled"


def test_an_end_that_cannot_be_written_fails_alone(settings: Settings) -> None:
    """One end the database refuses (a result that is not JSON) fails the group's transaction: the ends are
    then written one by one, and only that end's caller gets the error."""
    queue = TaskQueue(settings)
    tasks = [put(queue, core_id=f"WORK_AI_{n:02d}") for n in range(4)]
    claims = {claim.task_id: claim for claim in queue.claim("d1", 10)}
    ends = [(claims[task["task_id"]], {"result": {"n": n}}) for n, task in enumerate(tasks)]
    ends[2][1]["result"] = {"not json": object()}
    answers, _commits = finish_together(queue, ends)
    assert answers[:2] == [True, True] and answers[3] is True and isinstance(answers[2], Exception)
    assert [queue.get(t["task_id"])["status"] for t in tasks] == ["completed", "completed", "running", "completed"]


def test_a_claims_task_updates_reach_postgresql_in_one_round_trip(pg_url: str, isolated_env: Any) -> None:
    """The ORM writes a claim's task updates as an executemany, which psycopg2 sends one statement, one
    round trip, per row: 8 for a claim of 8, each while the claim holds its turn. The engine sends them
    together (psycopg2's execute_batch). Counted at the driver: its cursor's calls, an executemany as
    one per row."""
    import psycopg2.extensions

    from orch.config.loader import load_settings
    from orch.storage.engine import dispose_engines

    sent: list[str] = []

    class Counting(psycopg2.extensions.cursor):
        def execute(self, query: Any, variables: Any = None) -> Any:
            sent.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, variables)

        def executemany(self, query: Any, variables: Any) -> Any:
            rows = list(variables)
            sent.extend([query if isinstance(query, str) else query.decode()] * len(rows))
            return super().executemany(query, rows)

    settings = load_settings(environ={"DATABASE_URL": pg_url, "ORCH_HOME": "."}, generate_secrets=False)
    settings.dispatch.core_concurrency = 1
    upgrade(settings.database, create_database=True)
    queue = TaskQueue(settings)
    for number in range(8):
        put(queue, core_id=f"WORK_AI_{number:02d}")
    dispose_engines()
    engine = get_engine(queue.database)
    event.listen(engine, "connect", lambda dbapi_connection, _record: setattr(
        dbapi_connection, "cursor_factory", Counting))
    assert len(queue.claim("d1", 8)) == 8
    assert sum(statement.lstrip().startswith("UPDATE tasks") for statement in sent) == 1, sent


def test_a_move_whose_transaction_fails_at_commit_is_not_logged(pg_url: str, isolated_env: Any) -> None:
    """The JSON log line of a move is what ``orch recover tasks-from-logs`` reads when the database is
    gone. It was written as the move was made, before the commit: a claim that failed to commit left
    ``task.started`` lines for tasks that were never started. PostgreSQL refuses the commit here (a
    deferred constraint trigger, checked at COMMIT); the tasks stay queued and nothing is logged, and the
    next claim, committed, logs both."""
    import logging

    from sqlalchemy import text

    from orch.config.loader import load_settings

    settings = load_settings(environ={"DATABASE_URL": pg_url, "ORCH_HOME": "."}, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    queue = TaskQueue(settings)
    ids = sorted(put(queue, core_id=core)["task_id"] for core in ("WORK_AI_01", "WORK_AI_02"))
    with get_engine(queue.database).begin() as connection:
        connection.execute(text("CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS "
                                "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"))
        connection.execute(text("CREATE CONSTRAINT TRIGGER refuse_started AFTER INSERT ON task_events "
                                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                                "WHEN (NEW.event_type = 'task.started') EXECUTE FUNCTION refuse_commit()"))
    logged: list[tuple[str, str]] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append((getattr(record, "event_type", ""), getattr(record, "task_id", "")))

    history = logging.getLogger("orch.dispatch.task_history")
    handler, level = Lines(), history.level
    history.addHandler(handler)
    history.setLevel(logging.INFO)
    try:
        with pytest.raises(Exception, match="refused at commit"):
            queue.claim("d1", 2)
        assert logged == []
        assert [queue.get(task_id)["status"] for task_id in ids] == ["queued", "queued"]
        with get_engine(queue.database).begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_started ON task_events"))
        assert sorted(claim.task_id for claim in queue.claim("d1", 2)) == ids
        assert sorted(logged) == [("task.started", task_id) for task_id in ids]
    finally:
        history.removeHandler(handler)
        history.setLevel(level)


def test_a_task_cancelled_while_a_claim_reads_the_queue_is_not_claimed(pg_url: str, isolated_env: Any) -> None:
    """The claim reads the queue's pages without locking them (a row lock per row read cost PostgreSQL a
    heap and log write each) and locks only the tasks it takes, checking them still queued. A cancel that
    commits between the page read and that lock leaves its task out of the claim, and the claim takes the
    next. (PostgreSQL only: on SQLite the claim's write turn keeps the cancel out until the claim ends.)"""
    from orch.config.loader import load_settings

    settings = load_settings(environ={"DATABASE_URL": pg_url, "ORCH_HOME": "."}, generate_secrets=False)
    upgrade(settings.database, create_database=True)
    queue = TaskQueue(settings)
    first, second = put(queue)["task_id"], put(queue, core_id="WORK_AI_02")["task_id"]
    engine = get_engine(queue.database)
    paused, go = threading.Event(), threading.Event()

    def pause_after_the_page(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.current_thread().name == "claimer" and "ORDER BY tasks.sort_key" in statement:
            paused.set()
            go.wait(60)

    claimed: list[list[Claim]] = []
    claimer = threading.Thread(target=lambda: claimed.append(queue.claim("d1", 2)), name="claimer")
    event.listen(engine, "after_cursor_execute", pause_after_the_page)
    try:
        claimer.start()
        wait_until(paused.is_set, 60, "the claim's page read")
        queue.cancel(first, "alice")  # commits at once: the page read locked nothing
    finally:
        go.set()
        claimer.join(60)
        event.remove(engine, "after_cursor_execute", pause_after_the_page)
    assert [claim.task_id for claim in claimed[0]] == [second]
    assert queue.get(first)["status"] == "cancelled" and queue.get(second)["status"] == "running"
    assert event_types(queue, first) == ["task.created", "task.cancelled"]
