"""ORCH's worker process: Prefect's process worker, ORCH's in-process worker and the dispatcher.

All three need Prefect imported (about 100 MB); sharing one process keeps ORCH's own processes inside
their memory budget (measured in scripts/bench_startup.py), and lets the runs of the
``orch-inprocess`` pool (the monitoring sweep and self-healing) skip a Python start per run
(:mod:`orch.stack.inprocess` says why). The two Prefect workers run on the asyncio loop in the main
thread, exactly as ``prefect worker start`` runs one; the dispatcher runs the ``dispatch`` flow in a
thread, and every in-process flow run has a thread of its own.

SIGTERM/SIGINT, in dependency order: the dispatcher stops claiming and the in-process worker stops
taking runs, at once; ORCH tasks still running get :data:`HAND_BACK_AFTER_SECONDS` and are then handed
back to the queue (lease released, task queued again, its task run reported Cancelled) rather than
waited for, since any dispatcher can run them again; in-process flow runs get
:data:`orch.stack.inprocess.STOP_GRACE_SECONDS` (both windows run side by side) and are reported Crashed
if still running; the ``dispatch`` run reports its final state (Completed, "the ORCH stack stopped");
then the process exits 0 (:func:`orch.dispatch.service.exit_now`). Nothing waits for a poll interval:
measured, the idle stop is the dispatch run's final report, about 0.1-0.2 s, where the interpreter's
own teardown used to add 1.5-2.5 s (and a running task the whole ``orch up`` grace, then a SIGKILL).
A failing flow run never ends the process; a dispatcher that stops with an error does (exit 1), and
``orch up`` restarts it. As it starts, the process crashes the runs a SIGKILLed predecessor left Running
(:func:`_crash_predecessors`).

``python -m orch.stack.worker --pool orch-process --name NAME [--inprocess-pool orch-inprocess]
[--no-process] [--no-inprocess] [--no-dispatcher] [--[no-]sweep]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import Any

from orch.dispatch.dispatcher import HAND_BACK, REPORTED, STOP
from orch.dispatch.service import exit_now, request_stop
from orch.logging_config import get_logger
from orch.stack.pools import INPROCESS_POOL, PROCESS_POOL

# Not __name__: run as ``python -m orch.stack.worker`` that is "__main__", outside ORCH's loggers, and
# this module's lines (why a stop took long, which runs were crashed) went nowhere.
log = get_logger("orch.stack.worker")

# The stop's budget, inside the 7 s grace of `orch up` (orch.stack.supervisor) and systemd's 60 s:
# in-process runs 5 s (orch.stack.inprocess) beside tasks 1 s + the dispatch run's report 2 s, then 1 s
# to flush logs and events (orch.dispatch.service.exit_now).
HAND_BACK_AFTER_SECONDS = 1.0  # how long running ORCH tasks may take to finish once a stop is asked
REPORT_SECONDS = 2.0  # for the dispatch run's final report after a hand-back (one API call, normally ms)


def _dispatch_forever(failed: threading.Event) -> None:
    from orch.dispatch.service import run_until_stopped

    try:
        run_until_stopped()
    except BaseException:  # noqa: BLE001 - reported, then the whole process restarts
        log.exception("dispatcher stopped with an error")
        failed.set()
        STOP.set()


def _crash_predecessors() -> None:
    """Crash the runs a dead predecessor left Running (orch/monitoring/zombies.py: only on proof, such as its
    pid gone from this host), as soon as this process starts.

    ``orch up`` restarts a SIGKILLed worker within seconds, but its ``dispatch`` run and in-process runs stay
    Running until a sweep crashes them, and the restarted worker's first sweep comes only after its Prefect
    imports and first poll: measured, 14 s after the kill at a 5 s interval, against a goal of two intervals.
    Here, in a thread beside the start-up, they are crashed a second or two after the restart; the sweep
    remains the cure for everything else (a worker that is not restarted, another host's runs).
    """
    from orch.config.runtime import get_settings
    from orch.monitoring import zombies

    try:
        found = zombies.heal(get_settings())
    except Exception as exc:  # noqa: BLE001 - Prefect unreachable: the sweep tries again
        log.warning("could not look for runs a previous worker left Running: %s", exc)
        return
    if found.crashed:
        log.warning("crashed %d run(s) a previous worker left Running", len(found.crashed))


def _host_setup(sweep: bool) -> Any:
    """What the in-process worker runs once its pool exists: this host's queue, and its sweep unless ``sweep``
    is off (orch/monitoring/hosts.py)."""
    from orch.config.runtime import get_settings
    from orch.monitoring.hosts import ensure_host

    return lambda pool: ensure_host(get_settings(), pool, sweep=sweep)


async def _serve(pool: str | None, inprocess_pool: str | None, name: str, with_dispatcher: bool,
                 sweep: bool = True) -> int:
    from prefect.workers.process import ProcessWorker

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: (request_stop(), stopping.set()))
    failed = threading.Event()
    dispatcher = threading.Thread(target=_dispatch_forever, args=(failed,), name="orch-dispatcher", daemon=True)
    if with_dispatcher:
        dispatcher.start()

    workers: list[Any] = [ProcessWorker(work_pool_name=pool, name=name, create_pool_if_not_found=True)] if pool else []
    inprocess = None
    if inprocess_pool:
        from orch.config.runtime import get_settings
        from orch.monitoring.hosts import host_queue
        from orch.stack.inprocess import InProcessWorker

        queues = [host_queue(get_settings().monitoring.host_name), "default"]
        inprocess = InProcessWorker(work_pool_name=inprocess_pool, name=name, create_pool_if_not_found=True,
                                    work_queues=queues, host_setup=_host_setup(sweep))
        workers.append(inprocess)
    serving = [asyncio.create_task(worker.start()) for worker in workers]
    watcher = asyncio.create_task(_until(stopping, failed))
    await asyncio.wait({*serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in serving:
        if task.done() and task.exception() is not None:
            log.error("a Prefect worker loop stopped: %r", task.exception())
            failed.set()
    STOP.set()
    began = loop.time()
    await asyncio.gather(_drain(inprocess), _stop_dispatcher(dispatcher) if with_dispatcher else asyncio.sleep(0))
    drained = loop.time()
    for task in serving:
        task.cancel()
    for task in serving:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    watcher.cancel()
    log.info("stopped in %.2f s: runs and tasks %.2f s, Prefect workers %.2f s", loop.time() - began,
             drained - began, loop.time() - drained)
    return 1 if failed.is_set() else 0


async def _drain(inprocess: Any) -> None:
    """In-process flow runs: the window to finish, then Crashed (orch.stack.inprocess)."""
    if inprocess is None:
        return
    crashed = await inprocess.drain()
    if crashed:
        log.warning("stopped with in-process runs still running, reported Crashed: %s", ", ".join(crashed))


async def _stop_dispatcher(dispatcher: threading.Thread) -> None:
    """Wait for the dispatch run to report its final state (:data:`REPORTED`) or its thread to end; after
    :data:`HAND_BACK_AFTER_SECONDS` ask it to hand its running tasks back, then wait for that report. Not
    for the thread itself: after reporting it still joins Prefect's heartbeat thread (up to 1 s) and may
    stay inside a handed-back action until the process exits."""
    def over() -> bool:
        return REPORTED.is_set() or not dispatcher.is_alive()

    loop = asyncio.get_running_loop()
    for window, hand_back in ((HAND_BACK_AFTER_SECONDS, False), (REPORT_SECONDS, True)):
        if over():
            return
        if hand_back:
            HAND_BACK.set()
        deadline = loop.time() + window
        while not over() and loop.time() < deadline:
            await asyncio.sleep(0.02)
    if not over():
        log.warning("stopping: the dispatch run did not report its final state within %g s", REPORT_SECONDS)


async def _until(stopping: asyncio.Event, failed: threading.Event) -> None:
    while not stopping.is_set() and not failed.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prefect's process worker, ORCH's in-process worker and the "
                                                 "dispatcher in one process.")
    parser.add_argument("--pool", default=PROCESS_POOL, help=f"Process work pool (default {PROCESS_POOL}).")
    parser.add_argument("--inprocess-pool", default=INPROCESS_POOL,
                        help=f"Work pool whose runs execute in this process (default {INPROCESS_POOL}).")
    parser.add_argument("--no-process", action="store_true", help="No process worker.")
    parser.add_argument("--no-inprocess", action="store_true", help="No in-process worker.")
    parser.add_argument("--name", required=True)
    parser.add_argument("--no-dispatcher", action="store_true", help="No dispatcher.")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=None,
                        help=f"Deploy this host's monitoring sweep on its work queue (default: only when the "
                             f"in-process pool is {INPROCESS_POOL}; a scratch pool's worker is no host's). The "
                             "host's queue is created and served either way.")
    args = parser.parse_args(argv)
    from orch.config.runtime import get_settings
    from orch.lean_imports import lean_process
    from orch.logging_config import configure_process_logging

    lean_process(prefect=True)
    configure_process_logging(get_settings(), write_file=False)
    threading.Thread(target=_crash_predecessors, name="orch-zombies", daemon=True).start()
    code = asyncio.run(_serve(None if args.no_process else args.pool,
                              None if args.no_inprocess else args.inprocess_pool, args.name, not args.no_dispatcher,
                              args.inprocess_pool == INPROCESS_POOL if args.sweep is None else args.sweep))
    exit_now(code)


if __name__ == "__main__":
    sys.exit(main())
