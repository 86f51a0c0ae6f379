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
from dataclasses import dataclass

from orch.config.schema import Settings
from orch.dispatch.lease_owner import dispatcher_id
from orch.dispatch.queue import TaskQueue
from orch.logging_config import get_logger

log = get_logger(__name__)
STOP = threading.Event()  # set by the dispatcher service on SIGTERM: stop claiming, finish what runs


@dataclass
class DispatchSummary:
    dispatcher: str
    claimed: int = 0
    finished: int = 0
    lost: int = 0
    seconds: float = 0.0


def run_dispatcher(settings: Settings, *, concurrency: int, run_for_seconds: float,
                   poll_seconds: float) -> DispatchSummary:
    """Dispatch until the queue is empty (``run_for_seconds`` 0), the time is up, or :data:`STOP`.

    Stopping means: claim nothing more, and keep renewing the leases of what still runs until it ends.
    A lease must not lapse while its task is alive here, or another dispatcher would run it a second
    time alongside; if this process is killed instead, the leases lapse and the tasks are retried,
    which cannot overlap a run that died with the process.
    """
    from tasks.dispatch import Attempt, for_claim

    queue = TaskQueue(settings)
    summary = DispatchSummary(dispatcher=dispatcher_id())
    queue.release_dead_leases()  # a predecessor killed on this host: its tasks now, not after the lease
    started = time.monotonic()
    in_flight: dict[str, Attempt] = {}
    done: stdlib_queue.SimpleQueue[str] = stdlib_queue.SimpleQueue()
    renew_every = max(0.05, settings.dispatch.lease_seconds / 3)
    last_renew = started

    def finished(task_id: str) -> None:
        done.put(task_id)

    while True:
        while not done.empty():
            task_id = done.get()
            if in_flight.pop(task_id, None) is not None:
                summary.finished += 1
        stopping = STOP.is_set() or (run_for_seconds > 0 and time.monotonic() - started >= run_for_seconds)
        claims = []
        if not stopping and len(in_flight) < concurrency:
            claims = queue.claim(summary.dispatcher, concurrency - len(in_flight))
        for claim in claims:
            attempt = Attempt(claim)
            in_flight[claim.task_id] = attempt
            future = for_claim(attempt).submit(queue, attempt)
            future.add_done_callback(lambda _f, task_id=claim.task_id: finished(task_id))
        summary.claimed += len(claims)
        if time.monotonic() - last_renew >= renew_every and in_flight:
            held = queue.renew(summary.dispatcher, [a.claim.task_id for a in in_flight.values()])
            for task_id, attempt in in_flight.items():
                if task_id not in held and not attempt.lost.is_set() and not attempt.ended.is_set():
                    attempt.lost.set()  # cancelled by an operator, or the lease was lost
                    summary.lost += 1
            last_renew = time.monotonic()
        if not in_flight and (stopping or (run_for_seconds <= 0 and not claims)):
            break
        if not claims:
            # wake up as soon as a slot frees, else poll the queue again after poll_seconds
            with contextlib.suppress(stdlib_queue.Empty):
                done.put(done.get(timeout=poll_seconds))
    summary.seconds = round(time.monotonic() - started, 3)
    return summary
