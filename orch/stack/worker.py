"""ORCH's worker process: Prefect's process worker, ORCH's in-process worker and the dispatcher.

All three need Prefect imported (about 100 MB); sharing one process keeps ORCH's own processes inside
their memory budget (measured in scripts/bench_startup.py), and lets the runs of the
``orch-inprocess`` pool (the monitoring sweep and self-healing) skip a Python start per run
(:mod:`orch.stack.inprocess` says why). The two Prefect workers run on the asyncio loop in the main
thread, exactly as ``prefect worker start`` runs one; the dispatcher runs the ``dispatch`` flow in a
thread, and every in-process flow run has a thread of its own.

SIGTERM/SIGINT: the dispatcher stops claiming and the in-process worker stops taking runs; both get a
few seconds for what is running (in-process runs still running then are reported Crashed), then the
process exits 0. A failing flow run never ends the process; a dispatcher that stops with an error
does (exit 1), and ``orch up`` restarts it.

``python -m orch.stack.worker --pool orch-process --name NAME [--inprocess-pool orch-inprocess]
[--no-process] [--no-inprocess] [--no-dispatcher]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from typing import Any

from orch.dispatch.dispatcher import STOP
from orch.logging_config import get_logger
from orch.stack.pools import INPROCESS_POOL, PROCESS_POOL

log = get_logger(__name__)

DISPATCHER_JOIN_SECONDS = 6.0


def _dispatch_forever(failed: threading.Event) -> None:
    from orch.dispatch.service import run_until_stopped

    try:
        run_until_stopped()
    except BaseException:  # noqa: BLE001 - reported, then the whole process restarts
        log.exception("dispatcher stopped with an error")
        failed.set()
        STOP.set()


async def _serve(pool: str | None, inprocess_pool: str | None, name: str, with_dispatcher: bool) -> int:
    from prefect.workers.process import ProcessWorker

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: (STOP.set(), stopping.set()))
    failed = threading.Event()
    dispatcher = threading.Thread(target=_dispatch_forever, args=(failed,), name="orch-dispatcher", daemon=True)
    if with_dispatcher:
        dispatcher.start()

    workers: list[Any] = [ProcessWorker(work_pool_name=pool, name=name, create_pool_if_not_found=True)] if pool else []
    inprocess = None
    if inprocess_pool:
        from orch.stack.inprocess import InProcessWorker

        inprocess = InProcessWorker(work_pool_name=inprocess_pool, name=name, create_pool_if_not_found=True)
        workers.append(inprocess)
    serving = [asyncio.create_task(worker.start()) for worker in workers]
    watcher = asyncio.create_task(_until(stopping, failed))
    await asyncio.wait({*serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in serving:
        if task.done() and task.exception() is not None:
            log.error("a Prefect worker loop stopped: %r", task.exception())
            failed.set()
    STOP.set()
    if inprocess is not None:
        crashed = await inprocess.drain()
        if crashed:
            log.warning("stopped with in-process runs still running, reported Crashed: %s", ", ".join(crashed))
    for task in serving:
        task.cancel()
    for task in serving:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    watcher.cancel()
    if with_dispatcher:
        await asyncio.to_thread(dispatcher.join, DISPATCHER_JOIN_SECONDS)
    return 1 if failed.is_set() else 0


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
    args = parser.parse_args(argv)
    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging

    configure_process_logging(get_settings(), write_file=False)
    return asyncio.run(_serve(None if args.no_process else args.pool,
                              None if args.no_inprocess else args.inprocess_pool, args.name, not args.no_dispatcher))


if __name__ == "__main__":
    sys.exit(main())
