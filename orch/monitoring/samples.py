"""What a monitoring sweep measures, and how samples are stored and read back (db-maintenance purges them).

Each ``collect_*`` function measures one thing and returns ``Sample`` values; none raises for the thing
it measures being down (that is a measurement: a failed probe is a sample of its own). The sweep flow
runs each as its own retryable task and stores everything in one transaction.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from orch.config.schema import Settings
from orch.storage.engine import session_scope
from orch.storage.models import MonitorSample
from orch.storage.types import utcnow

# The subject of what every host sees alike (ORCH's database, Prefect, the queue and locks): measured by each
# host's sweep, kept under its historical name so the series and its stored history continue.
HOST = "host"
ACCESS_LOG_TAIL_BYTES = 4 * 1024**2  # the API's access lines of one interval fit easily


@dataclass(frozen=True)
class Sample:
    metric: str
    value: float
    subject: str = HOST


def disk_subject(host: str, path: str) -> str:
    """A disk's subject: ``<host>:<path>`` (the same path on two hosts is two disks)."""
    return f"{host}:{path}"


def collect_system(settings: Settings) -> list[Sample]:
    """This host's CPU, memory, load, disk usage per configured path and network byte counters (psutil),
    each about the host (``monitoring.host_name``).

    CPU is the average since this host's previous sweep, from the cumulative CPU times both sweeps stored
    about this host: psutil's own "since last call" counts from the last call anywhere in this process
    (another thread's a moment ago, or none after a worker restart), while the stored times survive
    restarts, and an average over the interval is what a threshold should judge anyway. Another
    host's counters are another subject, so hosts never subtract each other's.
    """
    import psutil

    host = settings.monitoring.host_name
    times = psutil.cpu_times()
    busy, total = sum(times) - times.idle - getattr(times, "iowait", 0.0), sum(times)
    previous = latest(settings, ("cpu_busy_seconds", "cpu_total_seconds"))
    before_busy, before_total = previous.get(("cpu_busy_seconds", host)), previous.get(("cpu_total_seconds", host))
    if before_busy is not None and before_total is not None and total > before_total:
        cpu = max(0.0, min(100.0, 100.0 * (busy - before_busy) / (total - before_total)))
    else:
        cpu = psutil.cpu_percent(interval=0.05)  # first sweep: a short look
    samples = [Sample("cpu_percent", round(cpu, 2), host), Sample("cpu_busy_seconds", busy, host),
               Sample("cpu_total_seconds", total, host),
               Sample("memory_percent", psutil.virtual_memory().percent, host)]
    for path in settings.monitoring.disk_paths:
        try:
            usage = psutil.disk_usage(path)
        except OSError:
            continue  # a path that vanished is reported by its missing series, not a crash of the sweep
        disk = disk_subject(host, path)
        samples += [Sample("disk_usage_percent", usage.percent, disk), Sample("disk_used_bytes", usage.used, disk),
                    Sample("disk_free_bytes", usage.free, disk)]
    net = psutil.net_io_counters()
    if net is not None:
        samples += [Sample("network_sent_bytes", float(net.bytes_sent), host),
                    Sample("network_recv_bytes", float(net.bytes_recv), host)]
    if hasattr(os, "getloadavg"):
        samples.append(Sample("load_1m", os.getloadavg()[0], host))
    return samples


def api_urls(settings: Settings) -> list[str]:
    """The API base URLs this host probes: ``monitoring.api_urls``, else this host's own API."""
    from orch.monitoring.targets import api_probe_host

    configured = [url.rstrip("/") for url in settings.monitoring.api_urls]
    return configured or [f"http://{api_probe_host(settings)}:{settings.api.port}"]


def collect_api(settings: Settings, window_seconds: float) -> list[Sample]:
    """The API's response time (a probe of ``/health`` at each API URL) and its error rate over the last window.

    With one URL the samples are about this host (the API it runs, as before); with several
    (``monitoring.api_urls``) each is about its URL. The error rate comes from this host's access log
    (``event_type: http_request``), so it covers real traffic of every client, not just the probe; a
    worker host without an API has no such lines and no error rate.
    """
    from orch.monitoring.target_checks import probe_client

    urls = api_urls(settings)
    samples: list[Sample] = []
    for url in urls:
        subject = settings.monitoring.host_name if len(urls) == 1 else url
        started = time.perf_counter()
        try:
            status = probe_client().get(f"{url}/health").status_code
            samples += [Sample("api_response_time_ms", round((time.perf_counter() - started) * 1000, 2), subject),
                        Sample("api_up", 1.0 if status < 500 else 0.0, subject)]
        except Exception:  # noqa: BLE001 - a down API is a sample, not an error of the sweep
            samples.append(Sample("api_up", 0.0, subject))
    total, errors = _access_log_counts(settings, window_seconds)
    if total:
        host = settings.monitoring.host_name
        samples += [Sample("api_requests", float(total), host),
                    Sample("api_error_rate_percent", 100.0 * errors / total, host)]
    return samples


def _access_log_counts(settings: Settings, window_seconds: float) -> tuple[int, int]:
    """Requests and 5xx answers in the API's access log within the window (the tail of the file only)."""
    if not settings.logging.file:
        return 0, 0
    path = Path(settings.logging.file)
    since = time.time() - window_seconds
    try:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            handle.seek(max(0, size - ACCESS_LOG_TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0, 0
    total = errors = 0
    for line in reversed(lines):
        if '"http_request"' not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        stamp = _epoch(entry.get("timestamp") or entry.get("asctime"))
        if stamp is not None and stamp < since:
            break
        total += 1
        errors += int(entry.get("status", 0)) >= 500
    return total, errors


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def collect_queue(settings: Settings) -> list[Sample]:
    """Queued tasks by priority, running tasks, and tasks that failed or timed out in the last interval."""
    from orch.dispatch.queue import TaskQueue
    from orch.storage.models import Task

    samples = [Sample("queue_depth", float(count), priority) for priority, count in TaskQueue(settings).depth().items()]
    since = utcnow() - timedelta(seconds=settings.monitoring.interval)
    with session_scope(settings.database) as session:
        running = session.scalar(select(func.count()).select_from(Task).where(Task.status == "running"))
        failed = session.scalar(select(func.count()).select_from(Task).where(
            Task.status.in_(("failed", "timed_out")), Task.finished_at > since))
    return samples + [Sample("tasks_running", float(running or 0)), Sample("tasks_failed_recent", float(failed or 0))]


def collect_locks(settings: Settings) -> list[Sample]:
    """Locks held, lock waiters and the longest current wait."""
    from orch.storage.models import LockWaiter, ResourceLock

    now = utcnow()
    with session_scope(settings.database) as session:
        held = session.scalar(select(func.count()).select_from(ResourceLock).where(ResourceLock.expires_at > now))
        waiting = session.scalar(select(func.count()).select_from(LockWaiter))
        oldest = session.scalar(select(func.min(LockWaiter.requested_at)))
    longest = (now - oldest).total_seconds() if oldest else 0.0
    return [Sample("locks_active", float(held or 0)), Sample("lock_waiters", float(waiting or 0)),
            Sample("lock_wait_longest_seconds", longest)]


def collect_database(settings: Settings) -> list[Sample]:
    """Whether ORCH's database answers and how fast, and whether its file is sound (SQLite).

    ``database_corrupt`` is ``PRAGMA quick_check``'s verdict (1 damaged, 0 sound) and
    ``database_check_ms`` its cost; the verdict is also left in the marker beside the file, which
    ``/health`` reports and the API obeys even when the damage keeps this sample from being stored.
    The full ``integrity_check`` stays db-health's job."""
    from sqlalchemy import text

    from orch.storage.engine import get_engine, is_corruption_error, is_sqlite
    from orch.storage.health import check_corruption

    started = time.perf_counter()
    try:
        with get_engine(settings.database).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        return [Sample("database_up", 0.0)] + ([Sample("database_corrupt", 1.0)] if is_corruption_error(exc) else [])
    found = [Sample("database_up", 1.0),
             Sample("database_latency_ms", round((time.perf_counter() - started) * 1000, 2))]
    started = time.perf_counter()
    try:
        problem = check_corruption(settings.database, "the monitoring sweep")
    except Exception:  # noqa: BLE001 - the database stopped answering: database_up says so next time
        return found
    if not is_sqlite(settings.database.url or ""):
        return found  # PostgreSQL: nothing was checked, so nothing is claimed
    return found + [Sample("database_corrupt", 0.0 if problem is None else 1.0),
                    Sample("database_check_ms", round((time.perf_counter() - started) * 1000, 2))]


def collect_prefect(settings: Settings) -> list[Sample]:
    """Prefect's readiness and its lag: how late the most overdue scheduled ORCH flow run is.

    A server that answers ``/ready`` while no run starts is not healthy; the lag says so. Only ORCH's runs
    (tag ``orch``, as every ORCH deployment has) count: another team's deployment with no worker of its
    own on a shared server is not ORCH's engine stalling. Nor do runs waiting in another host's queue
    (``host-<name>``): a host that stopped taking them is ``host_down``, not Prefect stalling.
    """
    from orch.monitoring.hosts import foreign_queue
    from orch.monitoring.target_checks import probe_client
    from orch.prefect_api import prefect_headers

    api_url = settings.prefect.resolved_api_url().rstrip("/")
    client = probe_client()
    started = time.perf_counter()
    try:  # /ready, unlike /health, checks the server's own database
        ready = client.get(f"{api_url}/ready", timeout=3.0).status_code == 200
    except Exception:  # noqa: BLE001 - an unreachable server is a sample
        ready = False
    samples = [Sample("prefect_up", 1.0 if ready else 0.0)]
    if not ready:
        return samples
    samples.append(Sample("prefect_latency_ms", round((time.perf_counter() - started) * 1000, 2)))
    now = utcnow()
    body = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}},
                          "expected_start_time": {"before_": now.isoformat()}, "tags": {"all_": ["orch"]}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 50}
    try:
        response = client.post(f"{api_url}/flow_runs/filter", json=body, headers=prefect_headers(settings.prefect))
        response.raise_for_status()
        runs = response.json()
    except Exception:  # noqa: BLE001
        return samples
    runs = [run for run in runs if not foreign_queue(settings, run.get("work_queue_name"))]
    lag = 0.0
    if runs and runs[0].get("expected_start_time"):
        expected = datetime.fromisoformat(runs[0]["expected_start_time"])
        lag = max(0.0, (now - expected).total_seconds())
    return samples + [Sample("prefect_lag_seconds", lag)]


def store(settings: Settings, samples: list[Sample], at: datetime | None = None) -> int:
    """Write one sweep's samples with one timestamp."""
    stamp = at or utcnow()
    with session_scope(settings.database) as session:
        session.add_all([MonitorSample(timestamp=stamp, metric=s.metric, subject=s.subject, value=float(s.value))
                         for s in samples])
    return len(samples)


def series(settings: Settings, metric: str, subject: str, since: datetime) -> list[tuple[datetime, float]]:
    """One metric's samples about one subject since ``since``, oldest first."""
    with session_scope(settings.database) as session:
        rows = session.execute(select(MonitorSample.timestamp, MonitorSample.value).where(
            MonitorSample.metric == metric, MonitorSample.subject == subject, MonitorSample.timestamp >= since)
            .order_by(MonitorSample.timestamp)).all()
    return [(row[0], row[1]) for row in rows]


def latest(settings: Settings, metrics: tuple[str, ...] | None = None) -> dict[tuple[str, str], float]:
    """The newest value of every (metric, subject) series, or of ``metrics`` only: what /metrics exports.

    Only the last few intervals are read (an older value is stale, and the table holds 30 days), by the
    timestamp index; the newest per series is picked here rather than by a GROUP BY, which databases
    answer by scanning the whole series index.
    """
    since = utcnow() - timedelta(seconds=max(3 * settings.monitoring.interval, 300))
    query = select(MonitorSample.metric, MonitorSample.subject, MonitorSample.value).where(
        MonitorSample.timestamp >= since)
    if metrics:
        query = query.where(MonitorSample.metric.in_(metrics))
    with session_scope(settings.database) as session:
        rows = session.execute(query.order_by(MonitorSample.timestamp, MonitorSample.id)).all()
    return {(metric, subject): value for metric, subject, value in rows}  # later rows overwrite older ones
