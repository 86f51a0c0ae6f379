"""The dispatcher loop: claim in queue order, run each claim as a Prefect task, keep leases alive.

It runs inside the ``dispatch`` flow, so every ORCH task becomes a task run of that flow run in the
Prefect UI. Claiming happens only when a slot is free, so the queue of record stays in ORCH's
database and Prefect only ever sees what is actually running: its backlog cannot grow without bound.
"""

from __future__ import annotations

import contextlib
import queue as stdlib_queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from orch.config.schema import Settings
from orch.dispatch.attempt import Attempt
from orch.dispatch.core_load import FOLD_EVERY_SECONDS
from orch.dispatch.lease_owner import dispatcher_id
from orch.dispatch.prefect_entries import forget_task_run
from orch.dispatch.queue import TaskQueue
from orch.logging_config import get_logger

if TYPE_CHECKING:
    from prefect.futures import PrefectFuture

# Starts an attempt as a Prefect task run of the current flow run: ``tasks.dispatch.submit``, passed in by the
# ``dispatch`` flow (the domain core never imports the tasks layer).
Submit = Callable[[TaskQueue, Attempt], "PrefectFuture[Any]"]

log = get_logger(__name__)
STOP = threading.Event()  # set on SIGTERM: stop claiming, finish what runs
# Set after STOP by a process that will not wait for what still runs (the worker, once its short stop
# window is over): hand it back to the queue now and return, see :func:`_hand_back`.
HAND_BACK = threading.Event()
# Set once a dispatch run stopped by HAND_BACK has reported its final state to Prefect: its thread may
# stay blocked in a handed-back action until the process exits, so that is what the process waits for.
REPORTED = threading.Event()
HANDED_BACK_REASON = "handed back: its dispatcher stopped while it ran"
NOT_RECORDED_WAIT = 5.0  # s a handed-back task run may take to appear in Prefect's records (see _cancel_task_runs)
RECORD_POLL_SECONDS = 0.2


@dataclass
class DispatchSummary:
    dispatcher: str
    claimed: int = 0
    finished: int = 0
    lost: int = 0
    handed_back: int = 0
    seconds: float = 0.0


def run_dispatcher(settings: Settings, *, submit: Submit, concurrency: int, run_for_seconds: float,
                   poll_seconds: float) -> DispatchSummary:
    """Dispatch until the queue is empty (``run_for_seconds`` 0), the time is up, or :data:`STOP`.

    Each claim runs through ``submit``, inside the calling flow run; what Prefect keeps for a task run
    is dropped once it is final (:func:`~orch.dispatch.prefect_entries.forget_task_run`), so an hour-long
    flow run holds only what is running.

    Stopping means: claim nothing more, and keep renewing the leases of what still runs until it ends.
    A lease must not lapse while its task is alive here, or another dispatcher would run it a second
    time alongside; if this process is killed instead, the leases lapse and the tasks are retried,
    which cannot overlap a run that died with the process. :data:`HAND_BACK` (set by a process about to
    exit) ends the wait: what still runs goes back to the queue at once (:func:`_hand_back`).
    """
    queue = TaskQueue(settings)
    summary = DispatchSummary(dispatcher=dispatcher_id())
    queue.release_dead_leases()  # a predecessor killed on this host: its tasks now, not after the lease
    started = time.monotonic()
    in_flight: dict[str, Attempt] = {}
    task_runs: dict[str, UUID] = {}  # ORCH task id -> its Prefect task run id
    unnoted: dict[str, str] = {}  # the same, for runs not yet on their task.started event
    done: stdlib_queue.SimpleQueue[str] = stdlib_queue.SimpleQueue()
    renew_every = max(0.05, settings.dispatch.lease_seconds / 3)
    last_renew = started
    waiting_said = False

    def finished(task_id: str) -> None:
        done.put(task_id)

    while True:
        while not done.empty():
            task_id = done.get()
            if in_flight.pop(task_id, None) is not None:
                summary.finished += 1
            if (run_id := task_runs.pop(task_id, None)) is not None:
                forget_task_run(run_id)
            unnoted.pop(task_id, None)
        if HAND_BACK.is_set() and in_flight:
            summary.handed_back = _hand_back(queue, summary.dispatcher, in_flight, task_runs)
            break
        stopping = STOP.is_set() or (run_for_seconds > 0 and time.monotonic() - started >= run_for_seconds)
        if STOP.is_set() and in_flight and not waiting_said:
            waiting_said = True  # the operator learns why the stop is not over yet, and how to end it
            log.warning("stopping: claiming nothing more; waiting for %d running task(s) (a second signal "
                        "hands them back to the queue)", len(in_flight))
        claims = []
        if not stopping and len(in_flight) < concurrency:
            claims = queue.claim(summary.dispatcher, concurrency - len(in_flight))
        for claim in claims:
            attempt = Attempt(claim)
            in_flight[claim.task_id] = attempt
            future = submit(queue, attempt)
            task_runs[claim.task_id] = future.task_run_id
            unnoted[claim.task_id] = str(future.task_run_id)
            future.add_done_callback(lambda _f, task_id=claim.task_id: finished(task_id))
        summary.claimed += len(claims)
        if time.monotonic() - last_renew >= renew_every and in_flight:
            held = queue.renew(summary.dispatcher, [a.claim.task_id for a in in_flight.values()], unnoted)
            unnoted.clear()
            for task_id, attempt in in_flight.items():
                if task_id not in held and not attempt.lost.is_set() and not attempt.ended.is_set():
                    attempt.lost.set()  # cancelled by an operator, or the lease was lost
                    summary.lost += 1
            last_renew = time.monotonic()
        queue.fold_load(every=FOLD_EVERY_SECONDS)
        if not in_flight and (stopping or (run_for_seconds <= 0 and not claims)):
            break
        if not claims:
            # wake up as soon as a slot frees, else poll the queue again after poll_seconds
            with contextlib.suppress(stdlib_queue.Empty):
                done.put(done.get(timeout=poll_seconds))
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def _hand_back(queue: TaskQueue, owner: str, in_flight: dict[str, Attempt], task_runs: dict[str, UUID]) -> int:
    """Give the tasks still running back to the queue now, instead of waiting for them.

    For a process that is about to exit (its action threads end with it): each attempt is marked lost
    first, so its thread neither retries nor records an outcome; its Prefect task run is reported
    Cancelled with the reason, so nothing is left Running in Prefect; its lease is released last, as a
    lapsed lease would be (the task queued again at its place while attempts remain), so another
    dispatcher can take it at once. Returns how many leases were released.
    """
    for attempt in in_flight.values():
        attempt.lost.set()
    _cancel_task_runs([run for task_id, run in task_runs.items() if task_id in in_flight])
    released = queue.hand_back(owner, list(in_flight), HANDED_BACK_REASON,
                               {task_id: str(run) for task_id, run in task_runs.items() if task_id in in_flight})
    log.warning("stopping: handed %d running task(s) back to the queue: %s", released, ", ".join(in_flight))
    return released


def _cancel_task_runs(run_ids: list[UUID], wait_for_record: float = NOT_RECORDED_WAIT) -> None:
    """Report the handed-back tasks' Prefect task runs Cancelled; a failure only leaves them for the
    monitoring sweep's zombie check, never keeps the tasks from going back to the queue.

    Prefect records a task run from the engine's events, asynchronously: on a busy server a run that
    started seconds ago may not be recorded yet, and setting its state answers 404 (CI saw the run then
    recorded Running after the dispatcher had exited). Such runs are asked again for up to
    ``wait_for_record`` seconds; once recorded, the Cancelled state is newer than any Running event
    still on its way, which Prefect then does not apply over it."""
    if not run_ids:
        return
    from prefect import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Cancelled

    deadline = time.monotonic() + wait_for_record
    pending = list(run_ids)
    try:
        with get_client(sync_client=True) as client:
            while pending:
                unrecorded = []
                for run_id in pending:
                    try:
                        client.set_task_run_state(run_id, Cancelled(message=HANDED_BACK_REASON), force=True)
                    except PrefectHTTPStatusError as exc:
                        if exc.response.status_code != 404:
                            raise
                        unrecorded.append(run_id)
                pending = unrecorded
                if pending and time.monotonic() >= deadline:
                    log.warning("stopping: task run(s) %s not recorded by Prefect after %g s; the monitoring "
                                "sweep's zombie check will end them", ", ".join(map(str, pending)), wait_for_record)
                    return
                if pending:
                    time.sleep(RECORD_POLL_SECONDS)
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("stopping: could not report handed-back task runs Cancelled: %s", exc)
