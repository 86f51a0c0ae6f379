"""The dispatcher on its own: ``python -m orch.dispatch.service`` (a host that runs Prefect's worker
separately, or extra dispatchers). ``orch up`` runs it inside its worker process (orch.stack.worker).

It runs the ``dispatch`` flow for an hour at a time, back to back, so each hour is one flow run in the
Prefect UI with the ORCH tasks it ran as its task runs. SIGTERM/SIGINT stop claiming and wait for the
running tasks, renewing their leases, so nothing runs twice alongside; a second SIGTERM/SIGINT (Ctrl-C
again) hands them back to the queue at once instead (orch.dispatch.dispatcher.HAND_BACK, as the
worker does after its short stop window). Either way the ``dispatch`` run ends Completed, saying the
stack stopped, and a stop never loses a task.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

from orch.dispatch.dispatcher import HAND_BACK, REPORTED, STOP
from orch.logging_config import get_logger
from orch.storage.engine import DatabaseCorrupt, is_corruption_error, known_corruption

if TYPE_CHECKING:
    from prefect.flows import Flow

log = get_logger("orch.dispatch.service")  # not __name__: that is "__main__" under ``python -m``

RUN_FOR_SECONDS = 3600.0
CORRUPT_POLL_SECONDS = 5.0  # how often a dispatcher stopped by a damaged database looks whether it was restored
FLUSH_SECONDS = 1.0  # for the flow-run logs and events still queued for the Prefect server at exit
DISPATCH_FLOW = "flows.dispatch:dispatch"  # the flow of prefect.yaml's dispatch/drain, as module:name


def dispatch_flow() -> Flow[..., Any]:
    """The ``dispatch`` flow, found by name as a worker finds a deployment's flow by its entrypoint.

    This process runs the flows layer, but the domain core does not import it (layers point down, kept by
    the import contracts in pyproject.toml): the flow is named here like prefect.yaml names it.
    """
    module, _, name = DISPATCH_FLOW.partition(":")
    return getattr(importlib.import_module(module), name)


def run_until_stopped() -> None:
    """Back-to-back ``dispatch`` flow runs until :data:`STOP` is set."""
    from orch.config.runtime import get_settings

    dispatch = dispatch_flow()
    settings = get_settings()
    while not STOP.is_set():
        try:
            dispatch(run_for_seconds=RUN_FOR_SECONDS, concurrency=settings.dispatch.concurrency,
                     poll_seconds=settings.dispatch.poll_seconds)
        except Exception as exc:
            if not (isinstance(exc, DatabaseCorrupt) or is_corruption_error(exc)):
                raise
            wait_out_corruption(settings.database.url or "", exc)


def wait_out_corruption(url: str, problem: BaseException, poll_seconds: float = CORRUPT_POLL_SECONDS) -> bool:
    """Claim nothing while the database is damaged, and stay alive: a restart would meet the same damage, and
    the process also runs this host's sweep, which reports it. Said once; claiming resumes when the damage
    marker is gone (``orch recover``, or a check that passed). True then, False when a stop came first."""
    damage = problem if isinstance(problem, DatabaseCorrupt) else DatabaseCorrupt(url, known_corruption(url) or str(
        problem).strip().splitlines()[0])
    log.error("the dispatcher claims nothing until the database is restored: %s", damage)
    while not STOP.wait(poll_seconds):
        if known_corruption(url) is None:
            log.info("the database damage is no longer recorded: the dispatcher claims again")
            return True
    return False


def request_stop(*_signal: object) -> None:
    """SIGTERM/SIGINT of a dispatcher process (this service, ORCH's worker). The first: claim nothing more,
    finish what runs. The second: hand what runs back to the queue now (the operator will not wait)."""
    if STOP.is_set():
        HAND_BACK.set()
    STOP.set()


def main() -> int:
    """The flows run in a thread: in the main thread Prefect's flow engine takes SIGTERM over for the
    run (and records it Crashed); here SIGTERM is ours, and means "finish and stop"."""
    import threading

    from orch.config.runtime import get_settings
    from orch.lean_imports import lean_process
    from orch.logging_config import configure_process_logging

    lean_process(prefect=True)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    configure_process_logging(get_settings(), write_file=False)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - reported below, and the exit code says so
            failed.append(exc)
            STOP.set()

    worker = threading.Thread(target=run, name="orch-dispatcher", daemon=True)
    worker.start()
    # Until the thread ends, or a hand-back has been reported: the thread may then stay inside a
    # handed-back action, which ends with the process.
    while worker.is_alive() and not REPORTED.is_set():
        worker.join(0.05)
    if failed:
        print(f"error: dispatcher stopped: {failed[0]!r}", file=sys.stderr)
        return 1
    return 0


def exit_now(code: int) -> NoReturn:
    """Flush what is still queued for the Prefect server and the log, then end the process at once: how
    a dispatcher process (this service, ORCH's worker) ends once its stop is done.

    Why not a normal interpreter exit: measured in ORCH's worker, it took 1.5-2.5 s after everything had
    stopped (the final garbage collection and module teardown of Prefect's ~100 MB heap; ``python -c
    "import prefect"`` alone spends 1.5 s exiting on this machine), and with a handed-back task still
    inside its action thread it waited for that thread (``concurrent.futures`` joins its workers at exit)
    until ``orch up`` or systemd killed the process. Everything that matters was done before: run states
    reported, leases released, and here Prefect's log and event queues drained and ORCH's log closed.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    deadline = time.monotonic() + FLUSH_SECONDS
    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - lost log lines must not keep the process alive
            log.warning("stopping: could not flush %s: %s", service.__name__, exc)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
