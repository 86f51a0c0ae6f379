"""The ``dispatch`` flow: run queued ORCH tasks on their cores, each as a retryable Prefect task."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import State, flow
from prefect.task_runners import ThreadPoolTaskRunner

from orch.config.runtime import get_settings
from orch.dispatch.dispatcher import REPORTED, STOP, DispatchSummary, run_dispatcher
from orch.dispatch.lease_owner import EXECUTOR_LABEL, dispatcher_id
from orch.logging_config import get_logger
from tasks.dispatch import quiet_run_logs, submit

MAX_CONCURRENCY = 64
RUN_TAGS = ("orch", "dispatch")

log = get_logger(__name__)


quiet_run_logs()


def mark_executor() -> None:
    """Tag this run as ORCH's and label it with the process executing it.

    The dispatcher service calls the flow directly (no deployment, so no tags): without this, a run whose
    process is SIGKILLed stays Running in Prefect for good and nothing can tell it from a live one. The
    monitoring sweep (orch/monitoring/zombies.py) reads the label back and crashes the run once that
    process is provably gone. A failure here costs only that evidence (heartbeats remain), never the run.
    """
    from prefect import get_client, runtime

    run_id = runtime.flow_run.id
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, tags=sorted({*runtime.flow_run.tags, *RUN_TAGS}))
            client.update_flow_run_labels(run_id, {EXECUTOR_LABEL: dispatcher_id()})
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("dispatch: could not label flow run %s with its executor: %s", run_id, exc)


def stopped_state(summary: DispatchSummary) -> State:
    """The final state of a dispatch run ended by a stop: Completed, saying so and what became of its tasks.

    Reported here, before the flow returns, and then announced (:data:`REPORTED`): after the flow returns,
    Prefect's engine waits for its heartbeat thread, which sleeps in 1 s slices (measured: 0.5-0.9 s of
    every idle stop), and for the task runner's threads, one of which may still be inside a handed-back
    action until the process exits. The process waits for the report, not for those threads. The engine
    then records the same returned state again, which changes nothing.
    """
    from prefect import get_client, runtime
    from prefect.states import Completed

    message = (f"the ORCH stack stopped: dispatched {summary.claimed}, finished {summary.finished}, "
               f"handed back to the queue {summary.handed_back}")
    if runtime.flow_run.id:
        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(runtime.flow_run.id, Completed(message=message), force=True)
        except Exception as exc:  # noqa: BLE001 - the engine reports the returned state as usual
            log.warning("dispatch: could not report the stopped run %s: %s", runtime.flow_run.id, exc)
        else:
            REPORTED.set()
    return Completed(message=message, data=asdict(summary))


@flow(name="dispatch", task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY))
def dispatch(run_for_seconds: float = 0, concurrency: int = 16, poll_seconds: float = 0.05) -> Any:
    """Claim queued tasks in queue order and run them, ``concurrency`` at a time.

    ``run_for_seconds=0`` drains the queue and returns (the ``dispatch/drain`` deployment); the
    dispatcher service runs it for an hour at a time, polling every ``poll_seconds``. Stopped (SIGTERM),
    the run ends Completed with a message saying the stack stopped, never left Running.
    """
    concurrency = max(1, min(concurrency, MAX_CONCURRENCY))
    mark_executor()
    summary = run_dispatcher(get_settings(), submit=submit, concurrency=concurrency,
                             run_for_seconds=run_for_seconds, poll_seconds=poll_seconds)
    return stopped_state(summary) if STOP.is_set() else asdict(summary)
