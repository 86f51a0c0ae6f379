"""ORCH's worker process: Prefect's process worker and ORCH's dispatcher, in one process.

Both need Prefect imported (about 100 MB); sharing one process keeps ORCH's own processes inside
their memory budget (measured in scripts/bench_startup.py). The Prefect worker runs on the asyncio
loop in the main thread, exactly as ``prefect worker start`` runs it; the dispatcher runs the
``dispatch`` flow in a thread. SIGTERM/SIGINT stop both; if either fails, the process exits non-zero
and ``orch up`` restarts it.

``python -m orch.stack.worker --pool orch-process --name NAME [--no-dispatcher]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading

from orch.dispatch.dispatcher import STOP
from orch.logging_config import get_logger

log = get_logger(__name__)


def _dispatch_forever(failed: threading.Event) -> None:
    from orch.dispatch.service import run_until_stopped

    try:
        run_until_stopped()
    except BaseException:  # noqa: BLE001 - reported, then the whole process restarts
        log.exception("dispatcher stopped with an error")
        failed.set()
        STOP.set()


async def _serve(pool: str, name: str, with_dispatcher: bool) -> int:
    from prefect.workers.process import ProcessWorker

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: (STOP.set(), stopping.set()))
    failed = threading.Event()
    dispatcher = threading.Thread(target=_dispatch_forever, args=(failed,), name="orch-dispatcher", daemon=True)
    if with_dispatcher:
        dispatcher.start()

    async with ProcessWorker(work_pool_name=pool, name=name, create_pool_if_not_found=True) as worker:
        serving = asyncio.create_task(worker.start())
        watcher = asyncio.create_task(_until(stopping, failed))
        await asyncio.wait({serving, watcher}, return_when=asyncio.FIRST_COMPLETED)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    STOP.set()
    if with_dispatcher:
        await asyncio.to_thread(dispatcher.join, 6.0)
    return 1 if failed.is_set() else 0


async def _until(stopping: asyncio.Event, failed: threading.Event) -> None:
    while not stopping.is_set() and not failed.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prefect process worker and ORCH dispatcher in one process.")
    parser.add_argument("--pool", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--no-dispatcher", action="store_true", help="Only the Prefect worker.")
    args = parser.parse_args(argv)
    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging

    configure_process_logging(get_settings(), write_file=False)
    return asyncio.run(_serve(args.pool, args.name, not args.no_dispatcher))


if __name__ == "__main__":
    sys.exit(main())
