"""Hosts: who sweeps, which targets live where, whether a host still sweeps and whether it has a live worker.

A host is a name (``monitoring.host_name``, the machine's hostname by default). Each host's ORCH worker
polls the ``orch-inprocess`` pool's queue ``host-<name>`` (plus the pool's default queue, for work any
host may take) and keeps a sweep deployment of its own on that queue (:func:`ensure_host`): Prefect's
scheduler then creates exactly one sweep per host per interval, and only that host's worker takes it.
A heal for a target is created on the queue of the target's host, so it runs where the target lives.

Why the worker registers its host (and not ``deployments.apply`` from a list of hosts): hosts come and
go, and the one thing that knows a host exists is its worker starting there. A host that goes away
leaves its deployment behind; its runs wait in a queue nobody polls, which no other host judges as
Prefect lagging (:func:`foreign_queue`), and its missing sweeps raise ``host_down`` on every other host.

Every sweep stores ``host_sweep`` about its host, stamped with the sweep's start: the newest one per host
is that host's last sweep, read by every other host's sweep (``host_down``), ``/health`` and ``/metrics``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from orch.config.schema import Settings, TargetSettings
from orch.logging_config import get_logger
from orch.monitoring.alerts import heal_key
from orch.storage.engine import session_scope
from orch.storage.models import Alert, MonitorSample
from orch.storage.types import utcnow

log = get_logger(__name__)
SWEEP_METRIC = "host_sweep"
QUEUE_PREFIX = "host-"
SWEEP_FLOW = "monitor-sweep"
SWEEP_ENTRYPOINT = "flows/monitor_sweep.py:monitor_sweep"
SELF_HEAL_DEPLOYMENT = "self-heal/auto"
KNOWN_FOR = timedelta(days=1)  # a host unseen for longer is no longer listed (decommissioned)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STALE_POLLS = 5  # polls a live worker cannot all miss
STALE_FLOOR_SECONDS = 10.0  # a worker on a loaded host may poll late; never judge it gone on less than this


def this_host(settings: Settings) -> str:
    return settings.monitoring.host_name


def host_queue(host: str) -> str:
    """The ``orch-inprocess`` work queue whose runs only ``host``'s worker takes."""
    return f"{QUEUE_PREFIX}{host}"


def sweep_deployment(host: str) -> str:
    return f"host-{host}"


def foreign_queue(settings: Settings, queue: str | None) -> bool:
    """A queue of another host: its runs wait for that host, whose lateness ``host_down`` reports."""
    return bool(queue and queue.startswith(QUEUE_PREFIX) and queue != host_queue(this_host(settings)))


def target_host(settings: Settings, target: TargetSettings) -> str:
    """Where a target lives: its ``host``, else the host whose configuration lists it."""
    return target.host or this_host(settings)


def down_after(settings: Settings) -> float:
    return settings.monitoring.host_down_after or 3 * settings.monitoring.interval + 30


def last_sweeps(settings: Settings, now: datetime | None = None) -> dict[str, datetime]:
    """Every host seen sweeping within :data:`KNOWN_FOR` before ``now``, with its last sweep's time."""
    since = (now or utcnow()) - KNOWN_FOR
    with session_scope(settings.database) as session:
        rows = session.execute(select(MonitorSample.subject, func.max(MonitorSample.timestamp)).where(
            MonitorSample.metric == SWEEP_METRIC, MonitorSample.timestamp >= since)
            .group_by(MonitorSample.subject)).all()
    return dict(rows)  # type: ignore[arg-type]


def forgotten_down_hosts(settings: Settings, seen: Iterable[str]) -> list[str]:
    """Hosts whose ``host_down`` is still active although they are no longer among the hosts ``seen``."""
    with session_scope(settings.database) as session:
        active = set(session.scalars(select(Alert.target).where(
            Alert.alert_name == "host_down", Alert.state.in_(("pending", "firing", "flapping")))))
    return sorted(active - set(seen))


def is_down(settings: Settings, last: datetime, now: datetime | None = None) -> bool:
    return ((now or utcnow()) - last).total_seconds() > down_after(settings)


def live_hosts(settings: Settings, now: datetime | None = None) -> set[str]:
    """Hosts whose last sweep is recent enough (this host is live while it sweeps)."""
    return {host for host, last in last_sweeps(settings).items() if not is_down(settings, last, now)} | {
        this_host(settings)}


def stale_after(settings: Settings) -> float:
    """Seconds without a poll after which a host's worker counts as gone: :data:`STALE_POLLS` of its
    polls (``prefect.worker_poll_seconds``), never less than :data:`STALE_FLOOR_SECONDS`."""
    return max(STALE_POLLS * settings.prefect.worker_poll_seconds, STALE_FLOOR_SECONDS)


def worker_state(settings: Settings, pool: str, host: str) -> str | None:
    """None when ``host`` has a live worker on ``pool``, else why not.

    Judged on the Prefect server's clock, so a host with a skewed clock cannot make a dead worker look
    alive: the queue's ``last_polled`` against the server's own time (the ``Date`` of its answer). Prefect
    keeps a queue READY for 60 s after its last poll; a worker polls every ``prefect.worker_poll_seconds``,
    so a queue not polled for :func:`stale_after` has lost its worker, and a heal sent there would wait
    in it for nobody (issue 18)."""
    from email.utils import parsedate_to_datetime

    from orch.prefect_api import prefect_http_client

    queue = host_queue(host)
    api = settings.prefect.resolved_api_url().rstrip("/")
    with prefect_http_client(settings.prefect, timeout=10.0) as http:
        response = http.get(f"{api}/work_pools/{pool}/queues/{queue}")
    if response.status_code == 404:
        return f"no ORCH worker has ever served host {host} (no work queue {queue} in work pool {pool})"
    response.raise_for_status()
    found = response.json()
    status = str(found.get("status") or "")
    polled = datetime.fromisoformat(found["last_polled"]) if found.get("last_polled") else None
    if status == "READY" and polled is not None:
        stamp = response.headers.get("date")
        age = (parsedate_to_datetime(stamp) - polled).total_seconds() if stamp else 0.0
        if age <= stale_after(settings):  # the Date is whole seconds, truncated: an age errs young, never old
            return None
        return (f"host {host} has no live ORCH worker (work queue {queue} in work pool {pool} was last polled "
                f"{age:.0f} s ago by the Prefect server's clock; its worker polls every "
                f"{settings.prefect.worker_poll_seconds:g} s)")
    return (f"host {host} has no live ORCH worker (work queue {queue} in work pool {pool} is "
            f"{status or 'not ready'}, last polled {polled.isoformat() if polled else 'never'})")


def create_heal_run(settings: Settings, alert: dict[str, Any], host: str) -> dict[str, Any]:
    """Create the ``self-heal/auto`` run for a firing target alert on ``host``'s queue.

    The sweep creates it rather than a Prefect automation: an automation's RunDeployment cannot choose a
    work queue. When ``host`` (not this one) has no live worker, the run goes to this host's queue with
    ``escalate`` saying why, and pages a human at once instead of waiting for a worker that is not there.
    The idempotency key is the alert's firing and heal number, so a retried task cannot heal the same
    firing twice. Returns the run's id, the host, the queue and the escalation (empty when none)."""
    from prefect.client.orchestration import get_client

    me = this_host(settings)
    key = heal_key(alert)
    parameters = {"target": alert["target"], "alert_name": alert["alert_name"], "summary": alert["summary"]}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(SELF_HEAL_DEPLOYMENT)
        escalate = "" if host == me else (worker_state(settings, deployment.work_pool_name or "", host) or "")
        if escalate:
            parameters["escalate"] = escalate
        queue = host_queue(me if escalate else host)
        run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters, idempotency_key=key,
                                                     work_queue_name=queue, tags=["orch", "healing", f"host:{host}"])
    return {"target": alert["target"], "host": host, "queue": queue, "flow_run_id": str(run.id),
            "escalate": escalate}


def ensure_host(settings: Settings, pool: str, sweep: bool = True) -> None:
    """This host's work queue in ``pool`` and (``sweep``) its sweep deployment on it, every
    ``monitoring.interval`` s: the same deployment ``deployments.apply`` makes of ``prefect.yaml``'s sweep.

    Written when missing or different (pool, queue, interval), so a changed interval takes effect when the
    worker restarts (it reads its settings once anyway); left alone when ``deployments.apply`` (run by
    ``orch up`` beside the worker's start) has already made it so, since rewriting the schedule replaces
    the runs Prefect has already scheduled."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import IntervalSchedule
    from prefect.exceptions import ObjectAlreadyExists

    host = this_host(settings)
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_queue(host_queue(host), description=f"Runs only ORCH host {host}'s worker takes.",
                                     work_pool_name=pool)
        if not sweep or _sweep_deployed(client, settings, pool):
            return
        flow_id = client.create_flow_from_name(SWEEP_FLOW)
        client.create_deployment(
            flow_id, sweep_deployment(host), work_pool_name=pool, work_queue_name=host_queue(host),
            entrypoint=SWEEP_ENTRYPOINT, path=str(PROJECT_ROOT), tags=["orch", "monitoring", f"host:{host}"],
            description=f"The monitoring sweep of host {host}, every {settings.monitoring.interval} s.",
            schedules=[DeploymentScheduleCreate(schedule=IntervalSchedule(
                interval=timedelta(seconds=settings.monitoring.interval)), active=True)])
        log.info("host %s: sweeping every %s s from work queue %s", host, settings.monitoring.interval,
                 host_queue(host))


def _sweep_deployed(client: Any, settings: Settings, pool: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    host = this_host(settings)
    try:
        found = client.read_deployment_by_name(f"{SWEEP_FLOW}/{sweep_deployment(host)}")
    except ObjectNotFound:
        return False
    intervals = [getattr(entry.schedule, "interval", None) for entry in found.schedules if entry.active]
    return (found.work_pool_name == pool and found.work_queue_name == host_queue(host)
            and intervals == [timedelta(seconds=settings.monitoring.interval)])


def hosts_view(settings: Settings, alerts: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each known host: its last sweep, whether it is down, and its active alerts (for /health, the console)."""
    from orch.monitoring.alerts import ACTIVE_STATES, list_alerts

    now = utcnow()
    active = [a for a in (alerts if alerts is not None else list_alerts(settings)) if a["state"] in ACTIVE_STATES]
    hosts_of_targets = {t.name: target_host(settings, t) for t in _targets(settings)}
    view = []
    for host, last in sorted(last_sweeps(settings).items()):
        mine = [f"{a['alert_name']}@{a['target']}" for a in active
                if a["target"] == host or hosts_of_targets.get(a["target"]) == host]
        view.append({"host": host, "last_sweep": last.isoformat(), "down": is_down(settings, last, now),
                     "alerts": mine})
    return view


def _targets(settings: Settings) -> list[TargetSettings]:
    from orch.monitoring.targets import configured_targets

    return configured_targets(settings)
