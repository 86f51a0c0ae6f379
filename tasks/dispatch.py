"""The Prefect task that runs one ORCH task's action, attempt after attempt.

Prefect does the retrying (exponential backoff) and enforces ``timeout_seconds``; this task keeps the
ORCH queue of record in step with each attempt: ``task.retrying`` before Prefect retries, and the final
``completed`` / ``failed`` / ``timed_out`` when it stops. Every queue move is conditional on the claim,
so a task cancelled meanwhile, or whose lease was lost, is left alone and not retried.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import time
from typing import Any

from prefect import Task, get_run_logger, runtime, task
from prefect.cache_policies import NONE
from prefect.futures import PrefectFuture
from prefect.tasks import exponential_backoff

from orch.dispatch.actions import ActionContext, ActionFailed, registry
from orch.dispatch.attempt import Attempt
from orch.dispatch.queue import Claim, TaskQueue
from orch.dispatch.request import authorize_run
from orch.security.flow_access import NotPermitted

BACKOFF_FACTOR = 1.0  # retry delays 1, 2, 4, 8 ... seconds


def retry_delays(retries: int) -> list[float]:
    return [float(d) for d in exponential_backoff(backoff_factor=BACKOFF_FACTOR)(retries)] if retries else []


def describe(exc: BaseException) -> str:
    if isinstance(exc, ActionFailed):
        return str(exc)
    if isinstance(exc, NotPermitted):
        return f"not run: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def run_fields(claim: Claim) -> str:
    """What an operator reading a Prefect run log needs to know which ORCH task and attempt a line is about."""
    return (f"task={claim.task_id} core={claim.core_id} action={claim.action} "
            f"attempt={claim.attempt}/{claim.max_retries + 1}")


def execute(queue: TaskQueue, attempt: Attempt, say: logging.Logger | logging.LoggerAdapter[Any]) -> Any:
    """One attempt: run the action, then record the outcome (or the retry) in the queue.

    ``say`` is the Prefect run logger: each line names the task, core, action and attempt, so the task
    run's log in the Prefect UI tells which ORCH task it is without opening ORCH's own log."""
    claim = attempt.claim
    say.info("task.started %s", run_fields(claim))
    task_run_id = str(runtime.task_run.id) if runtime.task_run.id else None  # for the claim's started event
    spec = registry()[claim.action]
    if spec.run is None:
        raise ActionFailed(f"action {claim.action!r} is run by its core, not by a dispatcher")
    context = ActionContext(task_id=claim.task_id, core_id=claim.core_id, attempt=claim.attempt,
                            timeout=claim.timeout, dispatch=queue.dispatch)
    started = time.monotonic()
    try:
        params = spec.params.model_validate(claim.params)
        requirement = spec.needs(params)
        if requirement is not None:  # checked at dispatch; again now, against the owner's current role
            authorize_run(queue.database, claim.task_id, requirement)
        result = spec.run(params, context)
    except BaseException as exc:
        # Prefect interrupts a timed-out attempt with its own internal cancellation error (turned into
        # TaskRunTimeoutError only outside this function), and actions raise their own kinds of timeout:
        # an attempt that ends in an exception at or past its deadline timed out, whatever the type.
        timed_out = isinstance(exc, (TimeoutError, subprocess.TimeoutExpired)) or (
            time.monotonic() - started >= claim.timeout)
        error = f"timed out after {claim.timeout} s" if timed_out else describe(exc)
        # a refusal is a verdict, not a hiccup: retrying would only ask the same question again
        if claim.retries_left > 0 and not attempt.lost.is_set() and not isinstance(exc, NotPermitted):
            delays = retry_delays(claim.max_retries + 1)
            delay = delays[min(claim.attempt - 1, len(delays) - 1)]
            following = queue.retrying(claim, error, delay)
            if following is None:
                attempt.lost.set()
                say.warning("task.lost %s: %s (cancelled or its lease lost: not retried)", run_fields(claim), error)
            else:
                attempt.claim = following
                say.warning("task.retrying %s: %s; next attempt in %s s", run_fields(claim), error, delay)
        else:
            status = "timed_out" if timed_out else "failed"
            if not queue.finish(claim, status, error=error, task_run_id=task_run_id):
                attempt.lost.set()
            attempt.ended.set()
            say.error("task.%s %s: %s", status, run_fields(claim), error)
        raise
    if queue.finish(claim, "completed", result=result, task_run_id=task_run_id):
        say.info("task.completed %s", run_fields(claim))
    else:
        attempt.lost.set()
        say.warning("task.lost %s: finished, but it was cancelled or its lease lost meanwhile", run_fields(claim))
    attempt.ended.set()
    return result


TASK_NAME = "orch-task"


class _RepeatedRunLines(logging.Filter):
    """On the ``prefect.task_runs`` logger (what reaches the Prefect server and the console), two lines
    Prefect writes for every task run that say nothing an ORCH task's own lines do not:

    - the notice that a timeout cannot interrupt blocking calls in a worker thread: ORCH's actions
      enforce their own deadline (subprocess and HTTP timeouts, sleeps in slices), with Prefect's
      ``timeout_seconds`` as the backstop;
    - "Finished in state Completed()" of an ORCH task, which :func:`execute`'s ``task.completed`` line
      says with the task, core, action and attempt (a failure's line, with its traceback, stays).

    At a hundred tasks a second each is a hundred rows a second for the Prefect server to store.
    Only the record's format string is read: formatting every record to judge it cost more.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else ""
        if record.levelno == logging.WARNING and text.startswith("Timeout of") and "worker thread" in text:
            return False
        return not (record.levelno == logging.INFO and text.startswith("Finished in state Completed")
                    and getattr(record, "task_name", None) == TASK_NAME)


class _ConsoleTaskLines(logging.Filter):
    """On the console handlers: an ORCH task's routine run-log lines (``task.started``,
    ``task.completed``) go to the Prefect server only. The process's console already has each move as
    ORCH's JSON line (:mod:`orch.dispatch.task_history`), which log analysis reads; the same line again
    through Prefect's rich console formatting was a twentieth of the dispatcher's CPU per task.
    Warnings and errors (a retry, a failure) are still printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and getattr(record, "task_name", None) == TASK_NAME)


def quiet_run_logs() -> None:
    """Install the two filters above (once; the ``dispatch`` flow's module calls it as it is imported)."""
    runs = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _RepeatedRunLines) for f in runs.filters):
        runs.addFilter(_RepeatedRunLines())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
                isinstance(f, _ConsoleTaskLines) for f in handler.filters):
            handler.addFilter(_ConsoleTaskLines())


@task(name=TASK_NAME, cache_policy=NONE, persist_result=False)
def run_orch_task(queue: TaskQueue, attempt: Attempt) -> Any:
    """Run the ORCH task ``attempt`` holds (configured per task by :func:`for_claim`)."""
    return execute(queue, attempt, get_run_logger())


def run_name(parameters: dict[str, Any]) -> str:
    """``<action> <core> <task_id>``: what an operator looks for in the UI, by the id the API answered or
    any part of it. The whole id, because its first characters are its time (UUIDv7): tasks made in the
    same minute share them. Prefect calls it with the run's parameters as the run starts."""
    claim = parameters["attempt"].claim
    return f"{claim.action} {claim.core_id} {claim.task_id}"


def still_retryable(_task: Task[..., Any], _run: Any, _state: Any) -> bool:
    """Prefect retries the attempt only while ORCH's claim is live: not once it was lost (cancelled, lease
    gone) or its final move was recorded. Called inside the run, where its parameters are in context."""
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    attempt: Attempt | None = context.parameters.get("attempt") if context and context.parameters else None
    return attempt is not None and not (attempt.lost.is_set() or attempt.ended.is_set())


@functools.lru_cache(maxsize=256)
def _configured(timeout: int, retries: int, delays: tuple[float, ...]) -> Task[..., Any]:
    """One Prefect task per (timeout, retries, delays): what differs per claim (its name, whether it may
    still retry) is read from the run's parameters, so claims share the few configurations there are.
    Building a Task per claim (``with_options``: its key from the function's source, its settings) was
    a twentieth of the dispatcher's CPU per task."""
    return run_orch_task.with_options(task_run_name=run_name, timeout_seconds=timeout, retries=retries,
                                      retry_delay_seconds=list(delays) or 0, retry_condition_fn=still_retryable)


def for_claim(attempt: Attempt) -> Task[..., Any]:
    """The Prefect task for this claim: named ``<action> <core> <first 8 of task_id>`` so an operator
    finds it in the UI (:func:`run_name`), with the task's own timeout and the retries it has left.

    No tags: Prefect acquires tag concurrency slots for every tagged task run (an API round trip each,
    and a service thread per distinct tag set that never ends). Measured on this machine: a per-task
    tag left 400 threads after 400 tasks and 1.8 GB after 2,000; per-core tags still cut throughput
    about fourfold. The ``dispatch`` flow run is the container an operator looks in.
    """
    claim = attempt.claim
    retries = claim.retries_left
    delays = retry_delays(claim.max_retries + 1)[claim.attempt - 1:][:retries]
    return _configured(claim.timeout, retries, tuple(delays))


def submit(queue: TaskQueue, attempt: Attempt) -> PrefectFuture[Any]:
    """Start ``attempt`` as a task run of the current flow run (the ``dispatch`` flow passes this to the
    dispatcher loop, which lives in the domain core and so cannot import this module)."""
    return for_claim(attempt).submit(queue, attempt)
