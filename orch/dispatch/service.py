"""The dispatcher on its own: ``python -m orch.dispatch.service`` (a host that runs Prefect's worker
separately, or extra dispatchers). ``orch up`` runs it inside its worker process (orch.stack.worker).

It runs the ``dispatch`` flow for an hour at a time, back to back, so each hour is one flow run in the
Prefect UI with the ORCH tasks it ran as its task runs. SIGTERM/SIGINT stop claiming, give running
tasks a few seconds, and exit; anything still running keeps its lease until it expires and is then
retried by another dispatcher, so a stop never loses a task.
"""

from __future__ import annotations

import signal
import sys

from orch.dispatch.dispatcher import STOP

RUN_FOR_SECONDS = 3600.0


def run_until_stopped() -> None:
    """Back-to-back ``dispatch`` flow runs until :data:`STOP` is set."""
    from flows.dispatch import dispatch
    from orch.config.runtime import get_settings

    settings = get_settings()
    while not STOP.is_set():
        dispatch(run_for_seconds=RUN_FOR_SECONDS, concurrency=settings.dispatch.concurrency,
                 poll_seconds=settings.dispatch.poll_seconds)


def main() -> int:
    """The flows run in a thread: in the main thread Prefect's flow engine takes SIGTERM over for the
    run (and records it Crashed); here SIGTERM is ours, and means "finish and stop"."""
    import threading

    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    configure_process_logging(get_settings(), write_file=False)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            run_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - reported below, and the exit code says so
            failed.append(exc)
            STOP.set()

    worker = threading.Thread(target=run, name="orch-dispatcher")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if failed:
        print(f"error: dispatcher stopped: {failed[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
