"""The ``orch-inprocess`` work pool: Prefect flow runs executed in a thread of ORCH's worker process.

Why it exists. A process worker starts every flow run as a new Python process that imports Prefect
and ORCH again: about 6 CPU-s and 5-15 s of wall time per run on this project's 2-core machine. For
the monitoring sweep (one run a minute) that is 10 % of a core, and for ``self-heal`` it was most of
the time to heal. The worker process (:mod:`orch.stack.worker`) has both imported already, so the
runs of this pool are executed there, in threads, through Prefect's own flow engine
(:func:`prefect.flow_engine.run_flow`): they stay real flow runs (state, retries, logs, pause for
input, UI), scheduled by their deployments and created by the sweep (heals) exactly as before.

Why a work pool rather than a sweep loop calling the flow (docs/architecture.md, "Why a second,
in-process pool"). With a pool every sweep and heal stays a deployment run: scheduled, visible and
runnable from the UI and ``prefect deployment run``, and Prefect hands each run to exactly one worker
(the Pending transition is the claim), on one host or many.

Hosts. Each host's worker polls only its own queue of the pool, ``host-<name>`` (its sweep, the heals of
the targets living on it), and the pool's ``default`` queue (work any host may take, such as a
``self-heal`` started by hand); as it starts it ensures that queue and its host's sweep deployment
(orch/monitoring/hosts.py). So there is exactly one sweep per host per interval, on that host, and a heal
runs where its target is.

Latency. Besides the usual poll (``PREFECT_WORKER_QUERY_SECONDS``), the worker subscribes to the
``prefect.flow-run.Scheduled`` events of its pool and polls at once when one arrives, so a heal run the
sweep creates starts within tens of milliseconds without polling every second (each poll costs
CPU in the worker and in the Prefect server).

What in-process means for a flow. It shares the worker's settings (loaded once per process, like the
dispatcher's: a config change needs a worker restart), its environment (a deployment's ``env`` job
variables are not applied) and its working directory. Only ORCH's own flows (modules of this
checkout) run here; anything else is refused with the reason, and belongs on ``orch-process``.
A running in-process run cannot be killed from the UI (there is no process to kill): it ends on its
own. On SIGTERM the worker stops taking runs, gives running ones :data:`STOP_GRACE_SECONDS`, and
reports what is still running as Crashed, so no run is left Running forever. A SIGKILL reports
nothing: each run carries the label ``orch.executor`` naming this process, and the restarted worker (as it
starts) and the monitoring sweep crash the runs of a process that is gone (orch/monitoring/zombies.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
from prefect.exceptions import InfrastructureNotAvailable
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

from orch.dispatch.lease_owner import EXECUTOR_LABEL, dispatcher_id
from orch.errors import OrchError
from orch.logging_config import get_logger

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import WorkerFlowRunResponse
    from prefect.flows import Flow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER_TYPE = "orch-inprocess"
STOP_GRACE_SECONDS = 5.0
LOOKAHEAD_SECONDS = 10.0
RESUBSCRIBE_SECONDS = 5.0
REPOLL_SECONDS = 0.3

log = get_logger(__name__)


class InProcessResult(BaseWorkerResult):
    """Exit status of one in-process run: 0 when the engine reached a final state, 1 when it raised."""


class RefusedEntrypoint(OrchError):
    """A deployment of the in-process pool whose flow is not one of this checkout's modules."""


def resolve_flow(entrypoint: str) -> Flow[..., Any]:
    """``flows/monitor_sweep.py:monitor_sweep`` -> the flow object of the already imported module.

    Imported by module name (cached after the first run) rather than executed from the file each time,
    so every run reuses the worker's imports; the file must be inside this checkout.
    """
    from prefect.flows import Flow

    path, _, name = entrypoint.partition(":")
    file = (PROJECT_ROOT / path).resolve()
    if not name or file.suffix != ".py" or not file.is_relative_to(PROJECT_ROOT) or not file.is_file():
        raise RefusedEntrypoint(f"entrypoint {entrypoint!r} is not a flow module of {PROJECT_ROOT}; "
                                f"deploy it to a process work pool instead")
    module = importlib.import_module(".".join(file.relative_to(PROJECT_ROOT).with_suffix("").parts))
    found = getattr(module, name, None)
    if not isinstance(found, Flow):
        raise RefusedEntrypoint(f"entrypoint {entrypoint!r} names no Prefect flow")
    return found


class InProcessWorker(BaseWorker[BaseJobConfiguration, BaseVariables, InProcessResult]):
    """A Prefect worker whose "infrastructure" is a thread of this process."""

    type = WORKER_TYPE
    job_configuration = BaseJobConfiguration
    job_configuration_variables = BaseVariables
    _description = "Runs ORCH's own flows in a thread of ORCH's long-lived worker process (no process per run)."
    _display_name = "ORCH in-process"

    def __init__(self, *args: Any, host_setup: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        """``host_setup(pool)``, when given, runs once the pool exists (this host's queue and sweep)."""
        kwargs.setdefault("prefetch_seconds", LOOKAHEAD_SECONDS)
        super().__init__(*args, **kwargs)
        self._host_setup = host_setup
        self._accepting = True
        self._armed: set[Any] = set()
        self._running: dict[Any, tuple[FlowRun, threading.Thread]] = {}
        self._identifier = f"orch-inprocess:{socket.gethostname()}"
        self._timers: anyio.abc.TaskGroup | None = None

    async def start(self, *args: Any, **kwargs: Any) -> None:
        """Prefect's worker loops, plus a poll whenever a run is scheduled in this pool and one at the start
        time of each run due within the look-ahead (both in a task group of ORCH's own)."""
        async with anyio.create_task_group() as group:
            self._timers = group
            group.start_soon(self._poll_on_scheduled_events)
            group.start_soon(self._set_up_host)
            await super().start(*args, **kwargs)
            group.cancel_scope.cancel()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        if not self._accepting:
            return []
        return await super().get_and_submit_flow_runs()

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        """The runs due now; for runs due within the look-ahead, a poll at their start time instead.

        Prefect's own prefetch would hand them over early, and a thread would then sit in the engine
        waiting for the start time (and a stop would find runs taken but not started). A run due at
        ``t`` starts at ``t`` plus a few milliseconds rather than up to a poll interval late, which is
        what keeps a scheduled sweep on time.
        """
        now = datetime.now(timezone.utc)
        due = []
        for response in await super()._get_scheduled_flow_runs():
            start = response.flow_run.next_scheduled_start_time or response.flow_run.expected_start_time
            if start is None or start <= now:
                due.append(response)
            elif response.flow_run.id not in self._armed and self._timers is not None:
                self._armed.add(response.flow_run.id)
                log.debug("in-process worker: flow run %s is due in %.1f s; polling for it then",
                          response.flow_run.id, (start - now).total_seconds())
                self._timers.start_soon(self._poll_at, response.flow_run.id, (start - now).total_seconds())
        return due

    async def _poll_at(self, flow_run_id: Any, delay: float) -> None:
        await anyio.sleep(delay)
        self._armed.discard(flow_run_id)
        await self.get_and_submit_flow_runs()

    async def run(self, flow_run: FlowRun, configuration: BaseJobConfiguration,
                  task_status: anyio.abc.TaskStatus[str] | None = None) -> InProcessResult:
        """Execute the run in a thread through Prefect's flow engine; return when it has finished."""
        deployment = await self.client.read_deployment(flow_run.deployment_id)
        flow = resolve_flow(deployment.entrypoint or "")
        await self._label_executor(flow_run)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        thread = threading.Thread(target=self._execute, args=(flow, flow_run, loop, done),
                                  name=f"orch-run-{flow_run.name}", daemon=True)
        self._running[flow_run.id] = (flow_run, thread)
        thread.start()
        if task_status is not None:
            task_status.started(self._identifier)
        try:
            status = await asyncio.shield(done)
        finally:
            self._running.pop(flow_run.id, None)
        return InProcessResult(identifier=self._identifier, status_code=status)

    async def _label_executor(self, flow_run: FlowRun) -> None:
        """Label the run with this process (``host:pid:nonce:boot``): Prefect's ``infrastructure_pid`` says
        only ``orch-inprocess:<host>``, and a run left Running by a SIGKILLed worker can then be proved
        dead and crashed by the monitoring sweep (orch/monitoring/zombies.py). Without the label the run
        still executes; only that evidence is missing (heartbeats remain)."""
        try:
            await self.client.update_flow_run_labels(flow_run.id, {EXECUTOR_LABEL: dispatcher_id()})
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("in-process worker: could not label run %s with its executor: %s", flow_run.name, exc)

    @staticmethod
    def _execute(flow: Flow[..., Any], flow_run: FlowRun, loop: asyncio.AbstractEventLoop,
                 done: asyncio.Future[int]) -> None:
        """The thread: the engine records the outcome (Completed/Failed) itself; whatever escapes it
        is logged here and never reaches the dispatcher or the worker loops."""
        from prefect.flow_engine import run_flow
        from prefect.logging.loggers import flow_run_logger

        status = 0
        try:
            run_flow(flow, flow_run=flow_run, return_type="state", error_logger=flow_run_logger(flow_run))
        except BaseException:  # noqa: BLE001 - a run's failure must not end the worker
            log.exception("in-process flow run %s raised out of the engine", flow_run.name)
            status = 1
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is exiting anyway
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(status))

    async def drain(self, grace: float = STOP_GRACE_SECONDS) -> list[str]:
        """Stop taking runs; wait up to ``grace`` s for running ones, report the rest Crashed.

        Returns the names of the runs reported Crashed. A thread cannot be killed; the process exits
        right after this, and the run's record says why it ended.
        """
        self._accepting = False
        deadline = asyncio.get_running_loop().time() + grace
        while self._running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Crashed

        crashed = []
        message = f"the ORCH worker stopped while this run was in progress (it had {grace:g} s to finish)"
        for flow_run, _thread in list(self._running.values()):
            try:
                result = await self.client.set_flow_run_state(flow_run.id, Crashed(message=message))
            except Exception as exc:  # noqa: BLE001 - the process is exiting; say which run may stay Running
                log.warning("in-process worker: could not report run %s as Crashed: %s", flow_run.name, exc)
                continue
            if result.status == SetStateStatus.ACCEPT:  # refused when the run reached a final state meanwhile
                crashed.append(flow_run.name)
        return crashed

    async def kill_infrastructure(self, infrastructure_pid: str, configuration: BaseJobConfiguration,
                                  grace_seconds: int = 30) -> None:
        """A run in a thread of the worker has no process of its own to kill."""
        raise InfrastructureNotAvailable("the run executes inside the ORCH worker process and ends on its own")

    async def _pool_id(self) -> Any:
        """The pool's id, known after the worker's first poll (which creates the pool if missing)."""
        while True:
            with contextlib.suppress(RuntimeError):
                if self.work_pool.id is not None:
                    return self.work_pool.id
            await anyio.sleep(0.2)

    async def _set_up_host(self) -> None:
        """This host's queue and sweep, once the pool exists; retried until done (Prefect may be starting)."""
        if self._host_setup is None:
            return
        await self._pool_id()
        while True:
            try:
                await anyio.to_thread.run_sync(self._host_setup, self._work_pool_name)
            except Exception as exc:  # noqa: BLE001 - the default queue is still served meanwhile
                log.warning("in-process worker: could not set up this host's queue and sweep (%s); retrying in %g s",
                            exc, RESUBSCRIBE_SECONDS)
                await anyio.sleep(RESUBSCRIBE_SECONDS)
                continue
            await self.get_and_submit_flow_runs()
            return

    async def _poll_on_scheduled_events(self) -> None:
        """Poll as soon as a flow run is scheduled in this pool; the periodic poll covers any gap
        (events missed while the websocket reconnects). Events that arrive during a poll are folded
        into one more poll: the scheduler creates runs by the dozen, and a poll answers for all."""
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter

        pool_id = await self._pool_id()
        wanted = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
                             any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{pool_id}"]))
        wake = asyncio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(self._poll_when_woken, wake)
            while True:
                try:
                    async with get_events_subscriber(filter=wanted, reconnect_on_clean_close=True) as events:
                        log.info("in-process worker: listening for runs scheduled in work pool %s",
                                 self.work_pool.name)
                        async for _event in events:
                            wake.set()
                except Exception as exc:  # noqa: BLE001 - the periodic poll still runs; try again shortly
                    log.warning("in-process worker: event subscription lost (%s); retrying in %g s",
                                exc, RESUBSCRIBE_SECONDS)
                await anyio.sleep(RESUBSCRIBE_SECONDS)

    async def _poll_when_woken(self, wake: asyncio.Event) -> None:
        """One poll per wake-up, and one more :data:`REPOLL_SECONDS` later: the event can arrive before the
        run it announces is visible to a poll (measured: then the run waited for the periodic poll)."""
        while True:
            await wake.wait()
            wake.clear()
            for delay in (0.0, REPOLL_SECONDS):
                await anyio.sleep(delay)
                if not self.is_setup:
                    continue
                try:
                    await self.get_and_submit_flow_runs()
                except Exception as exc:  # noqa: BLE001 - as a failed periodic poll: logged, the next retries
                    log.warning("in-process worker: poll after a Scheduled event failed: %s", exc)
