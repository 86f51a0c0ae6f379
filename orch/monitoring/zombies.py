"""Zombie runs: ORCH flow runs Prefect shows Running although whatever executed them is gone, and their cure.

Why ORCH must do this. A worker killed with SIGKILL (or a host that dies) reports nothing: its flow run and
the task runs in it stay ``Running`` in Prefect for good (PrefectHQ/prefect#16746, #18257, #7239). ORCH's
own tasks in them are safe already (the queue of record leases them), but the UI, concurrency slots and
every "is anything running?" question keep seeing the dead run. The monitoring sweep therefore finds
them, reports ``prefect_zombie_runs`` and crashes them in the same sweep: it is ORCH's own engine, so no
approval is asked, and every crash is audited and logged. A worker process restarted by ``orch up`` also
runs :func:`heal` once as it starts (orch/stack/worker.py), so its dead predecessor's runs are crashed
seconds after the restart rather than at its first sweep.

Evidence, strongest first; a run is crashed only on proof, never because it is slow:

1. Its executor is a process of this host that no longer exists. ORCH labels each run it executes with
   ``orch.executor`` = ``host:pid:nonce:boot`` (flows/dispatch.py, orch/stack/inprocess.py); Prefect's
   process worker sets ``infrastructure_pid`` = ``host:pid``. The check is the lease owners' own
   (:mod:`orch.dispatch.lease_owner`). A process of this host that still exists vetoes everything below:
   its heartbeats may only be late.
2. Otherwise (another host, no label): Prefect's flow-run heartbeats. The flow engine emits
   ``prefect.flow-run.heartbeat`` every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (``orch up`` sets 30);
   a run whose newest heartbeat is older than :data:`MISSED_HEARTBEATS` intervals is dead wherever it ran.
   The interval is the one observed between the run's own last two heartbeats when there are two (an
   executor may be configured differently from this sweep), and never less than the configured one. A
   run with no heartbeat at all is left alone: its executor may not send them.

A crash first crashes the run's task runs still Running or Pending, then the flow run, each through
Prefect's orchestration (not forced): a run that reached a final state meanwhile is refused by Prefect and
left as it is, and a sweep stopped half-way finds the flow run still Running and finishes the job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from orch.audit import record_audit
from orch.config.schema import Settings
from orch.dispatch.lease_owner import EXECUTOR_LABEL, local_pid, pid_gone, worker_pid
from orch.logging_config import get_logger
from orch.prefect_api import prefect_http_client
from orch.storage.engine import session_scope
from orch.storage.types import utcnow

log = get_logger(__name__)

ACTOR = "system:monitor"
RUN_TAG = "orch"  # every ORCH flow run carries it (prefect.yaml's deployments, flows/dispatch.py)
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
HEARTBEAT_ENV = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
PREFECT_DEFAULT_HEARTBEAT = 180  # Prefect 3's default frequency: what an executor sends when not told
MINIMUM_HEARTBEAT = 30  # Prefect refuses less
MISSED_HEARTBEATS = 3
RUN_LIMIT = 200  # Prefect's default page size for /flow_runs/filter and /task_runs/filter
UNFINISHED_TASK_STATES = ["RUNNING", "PENDING"]


@dataclass(frozen=True)
class Zombie:
    """A Running flow run whose executor is provably gone, and the proof (it becomes the Crashed message)."""

    flow_run_id: str
    name: str
    reason: str


@dataclass
class Sweep:
    """What one pass found and did."""

    zombies: list[Zombie] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)  # flow run ids set Crashed
    crashed_task_runs: list[str] = field(default_factory=list)  # task run ids set Crashed


def heartbeat_seconds(environ: dict[str, str] | None = None) -> int:
    """The heartbeat frequency this process's flow runs use (Prefect's setting, read without Prefect)."""
    environ = dict(os.environ) if environ is None else environ
    for name in HEARTBEAT_ENV:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return max(int(value), MINIMUM_HEARTBEAT)
    return PREFECT_DEFAULT_HEARTBEAT


def _stamp(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def executor_here(run: dict[str, Any]) -> tuple[int, str] | None:
    """(pid, description) of the run's executor when it is a process of this host, else None."""
    owner = (run.get("labels") or {}).get(EXECUTOR_LABEL)
    if isinstance(owner, str) and (pid := local_pid(owner)) is not None:
        return pid, f"its executor {owner}"
    infrastructure = run.get("infrastructure_pid") or ""
    if (pid := local_pid(infrastructure)) is not None:
        return pid, f"its executor {infrastructure}"
    if (pid := worker_pid(infrastructure)) is not None:
        return pid, f"its flow-run process {infrastructure}"
    return None


def _running_orch_runs(client: httpx.Client, api: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}, "tags": {"all_": [RUN_TAG]}},
            "limit": RUN_LIMIT}
    response = client.post(f"{api}/flow_runs/filter", json=body)
    response.raise_for_status()
    return list(response.json())


def _heartbeats(client: httpx.Client, api: str, run: dict[str, Any], since: datetime,
                now: datetime) -> list[datetime]:
    """The run's two newest heartbeats, newest first."""
    body = {"filter": {"event": {"name": [HEARTBEAT_EVENT]},
                       "resource": {"id": [f"prefect.flow-run.{run['id']}"]},
                       "occurred": {"since": since.isoformat(), "until": now.isoformat()}, "order": "DESC"},
            "limit": 2}
    response = client.post(f"{api}/events/filter", json=body)
    response.raise_for_status()
    return [stamp for event in response.json().get("events", []) if (stamp := _stamp(event.get("occurred")))]


def _heartbeat_verdict(client: httpx.Client, api: str, run: dict[str, Any], now: datetime,
                       configured: int) -> str | None:
    """Why the run's heartbeats prove it dead, or None."""
    started = _stamp(run.get("start_time"))
    if started is None or (now - started).total_seconds() <= MISSED_HEARTBEATS * configured:
        return None  # too young to have missed enough heartbeats
    beats = _heartbeats(client, api, run, started - timedelta(minutes=1), now)
    if not beats:
        return None  # no heartbeat ever: its executor may not send them
    cadence = (beats[0] - beats[1]).total_seconds() if len(beats) > 1 else max(configured, PREFECT_DEFAULT_HEARTBEAT)
    allowed = MISSED_HEARTBEATS * max(cadence, configured)
    silent = (now - beats[0]).total_seconds()
    if silent <= allowed:
        return None
    return (f"no heartbeat from its executor since {beats[0].isoformat(timespec='seconds')} ({silent:.0f} s, "
            f"more than {MISSED_HEARTBEATS} intervals of {max(cadence, configured):.0f} s)")


def find_zombies(settings: Settings, client: httpx.Client, now: datetime) -> list[Zombie]:
    """ORCH's Running flow runs whose executor is provably gone (see the module's evidence order)."""
    api = settings.prefect.resolved_api_url().rstrip("/")
    configured = heartbeat_seconds()
    found = []
    for run in _running_orch_runs(client, api):
        here = executor_here(run)
        if here is not None:
            pid, what = here
            reason = pid_gone(pid, what)
            if reason is None:
                continue  # alive on this host: late heartbeats would prove nothing
        else:
            reason = _heartbeat_verdict(client, api, run, now, configured)
            if reason is None:
                continue
        since = run.get("start_time") or "an unknown time"
        found.append(Zombie(str(run["id"]), str(run.get("name") or run["id"]),
                            f"ORCH found this run Running although {reason}; Running since {since}"))
    return found


def _crash(client: httpx.Client, url: str, message: str) -> bool:
    """Set Crashed through Prefect's orchestration; True when Prefect accepted it."""
    body = {"state": {"type": "CRASHED", "name": "Crashed", "message": message}, "force": False}
    response = client.post(url, json=body)
    response.raise_for_status()
    return response.json().get("status") == "ACCEPT"


def heal(settings: Settings, now: datetime | None = None) -> Sweep:
    """Find the zombie runs and crash each with its task runs; audit and log every crash.

    ``now`` is the moment judged (tests pass one to judge heartbeats without waiting for them to age).
    Raises ``httpx.HTTPError`` when Prefect cannot be asked (the ``prefect_up`` sample says so).
    """
    now = now or utcnow()
    api = settings.prefect.resolved_api_url().rstrip("/")
    result = Sweep()
    with prefect_http_client(settings.prefect, timeout=10.0) as client:
        result.zombies = find_zombies(settings, client, now)
        for zombie in result.zombies:
            body = {"flow_runs": {"id": {"any_": [zombie.flow_run_id]}},
                    "task_runs": {"state": {"type": {"any_": UNFINISHED_TASK_STATES}}}, "limit": RUN_LIMIT}
            response = client.post(f"{api}/task_runs/filter", json=body)
            response.raise_for_status()
            tasks = [(str(t["id"]), str(t.get("name") or t["id"])) for t in response.json()]
            message = f"its flow run {zombie.name} crashed: {zombie.reason}"
            crashed_tasks = [(task_id, name) for task_id, name in tasks
                             if _crash(client, f"{api}/task_runs/{task_id}/set_state", message)]
            crashed = _crash(client, f"{api}/flow_runs/{zombie.flow_run_id}/set_state", zombie.reason)
            _audit(settings, zombie, crashed, crashed_tasks)
            result.crashed_task_runs += [task_id for task_id, _ in crashed_tasks]
            if crashed:
                result.crashed.append(zombie.flow_run_id)
                log.warning("zombie flow run %s (%s) set Crashed with %d task run(s): %s", zombie.name,
                            zombie.flow_run_id, len(crashed_tasks), zombie.reason)
            else:
                log.info("zombie flow run %s (%s) reached a final state before it could be crashed",
                         zombie.name, zombie.flow_run_id)
    return result


def _audit(settings: Settings, zombie: Zombie, crashed: bool, tasks: list[tuple[str, str]]) -> None:
    with session_scope(settings.database) as session:
        for task_id, name in tasks:
            record_audit(session, actor=ACTOR, action="prefect.task_run.crash", resource="prefect_task_run",
                         resource_id=task_id, details={"name": name, "flow_run_id": zombie.flow_run_id,
                                                       "reason": zombie.reason})
        record_audit(session, actor=ACTOR, action="prefect.flow_run.crash", resource="prefect_flow_run",
                     resource_id=zombie.flow_run_id, success=crashed,
                     details={"name": zombie.name, "reason": zombie.reason, "task_runs": len(tasks)})
