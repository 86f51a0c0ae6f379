"""The ``dispatch`` flow: run queued ORCH tasks on their cores, each as a retryable Prefect task."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from orch.config.runtime import get_settings
from orch.dispatch.dispatcher import run_dispatcher

MAX_CONCURRENCY = 64


class _ThreadTimeoutNotice(logging.Filter):
    """Drop Prefect's per-run notice that a thread timeout cannot interrupt blocking calls.

    ORCH's actions enforce their own deadline (subprocess and HTTP timeouts, sleeps in slices), with
    Prefect's ``timeout_seconds`` as the backstop, so the notice says nothing new, and at a hundred
    tasks a second it would be a hundred log records a second shipped to the Prefect server.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timeout of") and "worker thread" in message)


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())


@flow(name="dispatch", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY))
def dispatch(run_for_seconds: float = 0, concurrency: int = 16, poll_seconds: float = 0.05) -> dict[str, Any]:
    """Claim queued tasks in queue order and run them, ``concurrency`` at a time.

    ``run_for_seconds=0`` drains the queue and returns (the ``dispatch/drain`` deployment); the
    dispatcher service runs it for an hour at a time, polling every ``poll_seconds``.
    """
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    summary = run_dispatcher(get_settings(), concurrency=concurrency, run_for_seconds=run_for_seconds,
                             poll_seconds=poll_seconds)
    return asdict(summary)
