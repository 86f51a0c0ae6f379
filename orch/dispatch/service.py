"""The dispatcher service: ``python -m orch.dispatch.service`` (``orch up`` runs one).

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


def main() -> int:
    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging

    settings = get_settings()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    from flows.dispatch import dispatch  # after the handlers: importing Prefect takes a few seconds

    configure_process_logging(settings, write_file=False)
    while not STOP.is_set():
        dispatch(run_for_seconds=RUN_FOR_SECONDS, concurrency=settings.dispatch.concurrency,
                 poll_seconds=settings.dispatch.poll_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
