"""Prometheus metrics of ORCH's domain, read from the database at scrape time.

``DomainCollector(settings)`` is registered in the API's ``/metrics`` registry. Everything here comes from
the database (latest sweep samples, the queue, tasks, locks, alerts, heal runs), so every API process and
replica reports the same values, and nothing is lost when one restarts. Labels are bounded: priorities,
task statuses, core ids, hosts, configured targets and paths, alert rule names, lock resource *types* (the part
before ``:``), heal outcomes; never task ids or raw resource names.

The queue depth by priority, the task totals and the duration histogram aggregate the tasks the database
holds, so their cost grows with it: 1,000,000 finished tasks took about 2 s a scrape, 1,000,000 queued ones
0.5 s, in the API process, every scrape. A reading that took longer than :data:`REUSE_AFTER_SECONDS` is
served again for :data:`REUSE_FACTOR` times what it cost (2 s: for 20 s), so scraping costs the API at most
about a tenth of a core however often Prometheus (or several) scrapes. The totals are counters read as rates
over minutes, and the depth's alert waits minutes too: a reading some seconds old changes neither. Cheaper
readings (any table of a normal size) are never reused; everything else is read live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector
from sqlalchemy import Float, case, cast, func, select

from orch.config.schema import Settings
from orch.logging_config import get_logger
from orch.storage.engine import is_sqlite, session_scope
from orch.storage.models import Alert, HealRun, LockStats, ResourceLock, Task
from orch.storage.types import utcnow

log = get_logger(__name__)
TASK_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
PRIORITY_NAMES = {3: "critical", 2: "high", 1: "normal", 0: "low"}
# (metric, Prometheus name, help, labels) for the newest sweep samples. "host" is the sample's host
# (monitoring.host_name of the host that measured it); a disk's subject is "<host>:<path>".
SAMPLE_GAUGES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("cpu_percent", "orch_system_cpu_percent", "Host CPU use, percent (average since the host's previous sweep).",
     ("host",)),
    ("memory_percent", "orch_system_memory_percent", "Host memory use, percent.", ("host",)),
    ("disk_used_bytes", "orch_system_disk_usage_bytes", "Bytes used on each configured path.", ("host", "path")),
    ("disk_usage_percent", "orch_system_disk_usage_percent", "Disk use on each configured path, percent.",
     ("host", "path")),
    ("network_sent_bytes", "orch_system_network_sent_bytes", "Bytes sent by the host (counter as sampled).",
     ("host",)),
    ("network_recv_bytes", "orch_system_network_recv_bytes", "Bytes received by the host (as sampled).", ("host",)),
    ("load_1m", "orch_system_load_1m", "The host's 1-minute load average.", ("host",)),
    ("api_response_time_ms", "orch_api_probe_response_ms", "The sweep's probe of the API's /health, ms (host: the "
     "probing host, or the API URL when monitoring.api_urls lists several).", ("host",)),
    ("api_error_rate_percent", "orch_api_error_rate_percent", "5xx share of API requests in the last interval.",
     ("host",)),
    ("database_up", "orch_database_up", "1 when ORCH's database answered the last sweep.", ()),
    ("prefect_up", "orch_prefect_up", "1 when the Prefect server was ready at the last sweep.", ()),
    ("prefect_lag_seconds", "orch_prefect_lag_seconds", "How late the most overdue scheduled flow run is.", ()),
    ("target_up", "orch_target_up", "1 when the target passed its health check at the last sweep.", ("target",)),
)


def _label_values(labels: tuple[str, ...], subject: str) -> list[str]:
    if labels == ("host", "path"):
        host, _, path = subject.partition(":")
        return [host, path] if path else ["", host]  # "" host: a sample stored before hosts had names
    return [subject] if labels else []


# A reading of the task aggregates (queue depth, totals, durations) that took longer than this is served
# again (see the module's doc) for REUSE_FACTOR times what it took.
REUSE_AFTER_SECONDS = 0.25
REUSE_FACTOR = 10.0
TaskTotal = tuple[str, str, float]  # core, status, count
TaskDurations = tuple[str, str, list[tuple[str, float]], float]  # core, status, cumulative buckets, sum


@dataclass(frozen=True)
class _TaskAggregates:
    depth: dict[int, float]  # queued tasks by priority
    totals: list[TaskTotal]
    durations: list[TaskDurations]
    until: float  # served again until then (the collector's clock); a cheap reading: never


def _duration_seconds(url: str) -> Any:
    """finished_at - started_at in seconds, in each database's dialect."""
    if is_sqlite(url):
        return (func.julianday(Task.finished_at) - func.julianday(Task.started_at)) * 86400.0
    return func.extract("epoch", Task.finished_at - Task.started_at)


class DomainCollector(Collector):
    """A prometheus_client custom collector; ``collect()`` runs a handful of aggregate queries per scrape."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` (seconds) measures what a reading of the task aggregates cost and how long it is served
        again: a test passes its own to step past the period instead of sleeping through it."""
        self.settings = settings
        self.clock = clock
        self._aggregates: _TaskAggregates | None = None
        self._aggregates_lock = threading.Lock()  # concurrent scrapes wait for one reading, not start their own

    def describe(self) -> Iterator[Metric]:
        """Names only, so registering the collector does not touch the database."""
        return iter(self._families().values())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        try:
            self._fill(families)
        except Exception:
            log.warning("domain metrics unavailable: database query failed", exc_info=True)
            failed = GaugeMetricFamily("orch_monitor_scrape_ok", families["orch_monitor_scrape_ok"].documentation)
            failed.add_metric([], 0.0)
            return iter([failed])
        families["orch_monitor_scrape_ok"].add_metric([], 1.0)
        return iter(families.values())

    @staticmethod
    def _families() -> dict[str, Metric]:
        families: dict[str, Metric] = {
            "orch_monitor_scrape_ok": GaugeMetricFamily("orch_monitor_scrape_ok",
                                                        "1 when the domain metrics could be read from the database."),
            "orch_task_queue_depth": GaugeMetricFamily("orch_task_queue_depth", "Queued tasks by priority.",
                                                       labels=["priority"]),
            "orch_tasks_total": CounterMetricFamily("orch_tasks", "Tasks by core and status.",
                                                    labels=["core_id", "status"]),
            "orch_task_duration_seconds": HistogramMetricFamily(
                "orch_task_duration_seconds", "Run time of finished tasks (last attempt).",
                labels=["core_id", "status"]),
            "orch_locks_active": GaugeMetricFamily("orch_locks_active", "Locks held, by resource type.",
                                                   labels=["resource_type"]),
            "orch_lock_wait_duration_seconds": SummaryMetricFamily(
                "orch_lock_wait_duration_seconds", "Time waited before acquiring a lock.", labels=["resource_type"]),
            "orch_lock_acquisition_total": CounterMetricFamily(
                "orch_lock_acquisition", "Lock requests by outcome: acquired, or timeout (gave up waiting).",
                labels=["resource_type", "status"]),
            "orch_alerts_active": GaugeMetricFamily("orch_alerts_active", "Alerts pending, firing or flapping.",
                                                    labels=["alert_name", "severity", "state"]),
            "orch_heal_runs_total": CounterMetricFamily("orch_heal_runs", "Self-healing runs by outcome.",
                                                        labels=["outcome"]),
            "orch_heal_runs_last_hour": GaugeMetricFamily("orch_heal_runs_last_hour",
                                                          "Self-healing runs that acted in the last hour.",
                                                          labels=["target"]),
            "orch_monitor_last_sweep_timestamp_seconds": GaugeMetricFamily(
                "orch_monitor_last_sweep_timestamp_seconds", "When the last monitoring sweep stored samples."),
        }
        families["orch_host_last_sweep_timestamp_seconds"] = GaugeMetricFamily(
            "orch_host_last_sweep_timestamp_seconds", "When each host's last monitoring sweep began.", labels=["host"])
        families["orch_host_up"] = GaugeMetricFamily(
            "orch_host_up", "1 while the host sweeps (0: host_down, no sweep for monitoring.host_down_after).",
            labels=["host"])
        for _, name, text, labels in SAMPLE_GAUGES:
            families[name] = GaugeMetricFamily(name, text, labels=list(labels))
        return families

    def _fill(self, families: dict[str, Metric]) -> None:
        from orch.monitoring.samples import latest
        from orch.storage.models import MonitorSample

        settings = self.settings
        from orch.monitoring.hosts import down_after, last_sweeps

        for (metric, subject), value in latest(settings).items():
            for sample_metric, name, _, labels in SAMPLE_GAUGES:
                if metric == sample_metric:
                    families[name].add_metric(_label_values(labels, subject), value)
        for host, last in last_sweeps(settings).items():
            families["orch_host_last_sweep_timestamp_seconds"].add_metric([host], last.timestamp())
            families["orch_host_up"].add_metric([host], float((utcnow() - last).total_seconds()
                                                              <= down_after(settings)))
        now = utcnow()
        with session_scope(settings.database) as session:
            aggregates = self._task_aggregates(session)
            for number, label in PRIORITY_NAMES.items():
                families["orch_task_queue_depth"].add_metric([label], aggregates.depth.get(number, 0.0))
            for core_id, status, count in aggregates.totals:
                families["orch_tasks_total"].add_metric([core_id, status], count)
            for core_id, status, buckets, total in aggregates.durations:
                families["orch_task_duration_seconds"].add_metric([core_id, status], buckets, total)
            self._locks(session, families, now)
            for name, severity, state, count in session.execute(
                    select(Alert.alert_name, Alert.severity, Alert.state, func.count())
                    .where(Alert.state.in_(("pending", "firing", "flapping")))
                    .group_by(Alert.alert_name, Alert.severity, Alert.state)):
                families["orch_alerts_active"].add_metric([name, severity, state], float(count))
            for outcome, count in session.execute(select(HealRun.outcome, func.count()).group_by(HealRun.outcome)):
                families["orch_heal_runs_total"].add_metric([outcome], float(count))
            for target, count in session.execute(
                    select(HealRun.target, func.count()).where(
                        HealRun.started_at > now - timedelta(hours=1),
                        HealRun.outcome.in_(("running", "healed", "failed"))).group_by(HealRun.target)):
                families["orch_heal_runs_last_hour"].add_metric([target], float(count))
            last = session.scalar(select(func.max(MonitorSample.timestamp)).where(
                MonitorSample.timestamp > now - timedelta(days=1)))
            if last is not None:
                families["orch_monitor_last_sweep_timestamp_seconds"].add_metric([], last.timestamp())

    def _task_aggregates(self, session: Any) -> _TaskAggregates:
        """The queue depth, task totals and durations: read now, or the last reading while it is served again."""
        with self._aggregates_lock:
            kept = self._aggregates
            if kept is not None and self.clock() < kept.until:
                return kept
            started = self.clock()
            depth = {priority: float(count) for priority, count in session.execute(
                select(Task.priority, func.count()).where(Task.status == "queued").group_by(Task.priority))}
            totals = [(core_id, status, float(count)) for core_id, status, count in session.execute(
                select(Task.core_id, Task.status, func.count()).group_by(Task.core_id, Task.status))]
            durations = self._task_durations(session)
            ended = self.clock()
            cost = ended - started
            until = ended + REUSE_FACTOR * cost if cost > REUSE_AFTER_SECONDS else float("-inf")
            self._aggregates = _TaskAggregates(depth, totals, durations, until)
            return self._aggregates

    def _task_durations(self, session: Any) -> list[TaskDurations]:
        """One aggregate query: per (core, status) the count at or under each bucket, the sum and the count.

        The duration is computed once per row in a MATERIALIZED CTE; inline, the database recomputes it
        for every bucket (three times slower on 20,000 tasks).
        """
        duration = cast(_duration_seconds(self.settings.database.url or ""), Float).label("duration")
        rows = (select(Task.core_id, Task.status, duration)
                .where(Task.finished_at.is_not(None), Task.started_at.is_not(None))
                .cte("task_durations").prefix_with("MATERIALIZED"))
        columns = [func.sum(case((rows.c.duration <= bound, 1), else_=0)) for bound in TASK_BUCKETS]
        query = (select(rows.c.core_id, rows.c.status, func.count(), func.coalesce(func.sum(rows.c.duration), 0.0),
                        *columns).group_by(rows.c.core_id, rows.c.status))
        out: list[TaskDurations] = []
        for core_id, status, count, total, *cumulative in session.execute(query):
            buckets = [(str(bound), float(n or 0)) for bound, n in zip(TASK_BUCKETS, cumulative, strict=True)]
            out.append((core_id, status, buckets + [("+Inf", float(count))], float(total or 0.0)))
        return out

    @staticmethod
    def _locks(session: Any, families: dict[str, Metric], now: Any) -> None:
        held: dict[str, int] = {}
        for resource in session.scalars(select(ResourceLock.resource).where(ResourceLock.expires_at > now)):
            kind = resource.split(":", 1)[0]
            held[kind] = held.get(kind, 0) + 1
        for kind, count in held.items():
            families["orch_locks_active"].add_metric([kind], float(count))
        waits: dict[str, list[float]] = {}
        for stats in session.scalars(select(LockStats)):
            kind = stats.resource.split(":", 1)[0]
            acc = waits.setdefault(kind, [0.0, 0.0, 0.0])
            acc[0] += stats.acquisitions
            acc[1] += stats.total_wait_seconds
            acc[2] += stats.timeouts
        for kind, (count, total, timeouts) in waits.items():
            families["orch_lock_wait_duration_seconds"].add_metric([kind], count, total)
            families["orch_lock_acquisition_total"].add_metric([kind, "acquired"], count)
            families["orch_lock_acquisition_total"].add_metric([kind, "timeout"], timeouts)
