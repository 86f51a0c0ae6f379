"""The monitoring sweep: measure, store, evaluate the alert rules, and act on what changed.

Each host sweeps itself: its worker keeps the deployment ``monitor-sweep/host-<name>`` on the
``orch-inprocess`` pool's queue ``host-<name>`` every ``monitoring.interval`` seconds
(orch/monitoring/hosts.py), and each run executes in a thread of that host's worker process
(orch/stack/inprocess.py), so a sweep costs its own work and not a Python start. A sweep measures its
host, the services every host shares, and the targets living on its host (plus the URL-checked targets
of a host that has stopped sweeping, so they are not left unwatched); it judges its host's rules and
``host_down`` for every other host. A firing target alert becomes a ``self-heal`` run on the queue of
the target's host (created here: Prefect's RunDeployment action cannot choose a queue), and the event
``orch.alert.firing`` about ``orch.target.<name>`` for whoever listens; that run tells a human what
fired and what healing did. Everything else that changed (thresholds, anomalies, resolutions, flapping,
hosts down) is notified here, one message per target.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime

from orch.config.runtime import get_settings
from orch.monitoring import hosts, messages, targets
from orch.monitoring.alerts import (
    DATABASE_CORRUPT,
    Notice,
    corruption_notice,
    heal_not_requested,
    healing_stopped_by,
)
from orch.monitoring.samples import Sample
from orch.notify import send_notification
from orch.storage.engine import note_corruption_notified
from orch.storage.types import utcnow
from tasks import monitoring

COLLECTORS = (monitoring.system_metrics, monitoring.api_metrics, monitoring.queue_metrics, monitoring.lock_metrics,
              monitoring.database_metrics, monitoring.prefect_metrics, monitoring.prefect_zombies)


def healing_will_report(settings: Any) -> bool:
    """Whether a self-heal run will notify for a firing target alert (else this sweep must)."""
    return healing_stopped_by(settings) is None


def emit_alert_event(notice: Notice, host: str) -> None:
    """``orch.alert.<kind>`` about ``orch.target.<name>`` (payload: the alert and the target's host), for
    Prefect automations and event feeds; the heal itself is created by :func:`tasks.monitoring.request_heal`."""
    from prefect.events import emit_event

    alert = notice.alert
    emit_event(event=f"orch.alert.{notice.kind}",
               resource={"prefect.resource.id": f"orch.target.{alert['target']}",
                         "prefect.resource.name": alert["target"]},
               payload={**{key: alert[key] for key in ("alert_name", "target", "severity", "summary", "value",
                                                       "threshold", "state")}, "host": host})


def swept_targets(settings: Any) -> list[str]:
    """The targets this host checks: those living on it, and the URL-checked ones of hosts not sweeping
    (a command or a supervised process can only be checked where it lives)."""
    me, live = hosts.this_host(settings), hosts.live_hosts(settings)
    names = []
    for target in targets.configured_targets(settings):
        host = hosts.target_host(settings, target)
        if host == me or (host not in live and target.health_check.url):
            names.append(target.name)
    return names


def say_recorded_damage(settings: Any, run_url: str | None) -> None:
    """The critical ``database_corrupt`` alert, from the damage marker, when the sweep cannot store or evaluate:
    its alert row would live in the damaged file (orch.monitoring.alerts.corruption_notice)."""
    notice = corruption_notice(settings, utcnow())
    if notice is None:
        return
    for message in messages.group_by_target([notice], run_url=run_url):
        send_notification(settings, message.title, message.body, message.severity, labels=message.labels,
                          resolved=message.resolved)


@flow(name="monitor-sweep")
def monitor_sweep() -> dict[str, Any]:
    """System, API, queue, locks, database, Prefect and every target; then alerts, events and messages."""
    logger = get_run_logger()
    settings = get_settings()
    if not settings.features.enable_monitoring:
        logger.info("monitoring is turned off (features.enable_monitoring: false); nothing measured")
        return {"skipped": "features.enable_monitoring is false"}
    names = swept_targets(settings)
    started = utcnow()
    futures = [collector.submit() for collector in COLLECTORS] + [monitoring.target_health.submit(n) for n in names]
    found = []
    for future in futures:
        future.wait()
        if future.state.is_completed():
            found += future.result()
        else:  # one broken collector must not blind the sweep to everything else
            logger.warning("a collector failed after its retries: %s", future.state.message)
    run_url = messages.flow_run_url(settings, str(runtime.flow_run.id) if runtime.flow_run.id else None)
    stored = monitoring.store_samples([*found, Sample(hosts.SWEEP_METRIC, 1.0, hosts.this_host(settings))], started,
                                      return_state=True)
    lost = monitoring.lost_heals(names, return_state=True)  # before the alerts: this sweep asks again
    if lost.is_completed():
        for heal in lost.result():
            logger.error("the self-heal run for %s (heal %s of this firing) ended %s without acting%s; %s",
                         heal.target, heal.heals, heal.state, f": {heal.message}" if heal.message else "",
                         "asking again" if heal.again else "not asking again: as many runs as "
                         "monitoring.self_healing.max_runs_per_hour were lost; the alert's reminders go on")
    else:
        logger.warning("could not look for self-heal runs that never acted: %s", lost.message)
    evaluated = monitoring.evaluate_alerts(names, return_state=True) if stored.is_completed() else stored
    if not evaluated.is_completed():
        logger.error("could not store the samples or evaluate the alerts: %s", evaluated.message)
        say_recorded_damage(settings, run_url)
    notices = evaluated.result()  # a failed step's error, raised: the run ends Failed, as before
    to_say = []
    for notice in notices:
        if notice.kind in ("firing", "resolved") and notice.alert["alert_name"] == "target_down":
            host = hosts.target_host(settings, targets.find_target(settings, notice.alert["target"]))
            emit_alert_event(notice, host)
        if notice.alert["alert_name"] == DATABASE_CORRUPT and notice.kind in ("firing", "reminder"):
            note_corruption_notified(settings.database.url or "", utcnow())  # said here: not again when stuck
        if notice.heal and healing_will_report(settings):
            requested = monitoring.request_heal(notice.alert, return_state=True)
            if requested.is_completed():
                heal = requested.result()
                logger.info("self-heal of %s on host %s: flow run %s%s", heal["target"], heal["host"],
                            heal["flow_run_id"], f" (escalates: {heal['escalate']})" if heal["escalate"] else "")
                continue  # the self-heal run says what fired and what it did, in one message
            logger.error("could not create the self-heal run for %s: %s; the next sweep asks again",
                         notice.alert["target"], requested.message)
            heal_not_requested(settings, notice.alert["target"], notice.alert["alert_name"], utcnow())
        to_say.append(notice)
    note = "Self-healing is turned off; nothing was done." if not healing_will_report(settings) else ""
    sent = []
    for message in messages.group_by_target(to_say, run_url=run_url, note=note):
        sent += send_notification(settings, message.title, message.body, message.severity, labels=message.labels,
                                  resolved=message.resolved)
    summary = {"host": hosts.this_host(settings), "samples": len(found),
               "notices": [f"{n.kind}:{n.alert['alert_name']}@{n.alert['target']}" for n in notices],
               "notified": len(sent)}
    logger.info("sweep: %s samples, %s", summary["samples"], ", ".join(summary["notices"]) or "no alert changes")
    return summary
