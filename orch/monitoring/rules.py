"""Alert rules evaluated on recorded samples: fixed thresholds with a "for" duration, EWMA anomalies and
target health.

Evaluation reads the samples the sweeps stored, so it needs no memory between sweeps (a sweep runs in a
thread of whichever worker takes it, which may have restarted since the last one) and gives the same
verdict whichever process evaluates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from orch.config.schema import Settings
from orch.monitoring.samples import HOST, api_urls, disk_subject, series


@dataclass(frozen=True)
class Observation:
    """What a rule sees now: ``state`` is ``ok``, ``pending`` (crossed, not yet for long enough) or ``firing``."""

    alert_name: str
    target: str
    state: str
    severity: str
    summary: str
    value: float | None
    threshold: float | None
    since: datetime | None = None  # when the crossing began
    heal: bool = False  # a firing target alert triggers self-healing
    latest_at: datetime | None = None  # when the newest sample judged was taken (is it newer than a heal?)


@dataclass(frozen=True)
class ThresholdRule:
    alert_name: str
    metric: str
    threshold: float
    above: bool  # True: value > threshold is bad; False: value < threshold is bad
    severity: str
    unit: str
    for_seconds: float
    subjects: tuple[str, ...] = (HOST,)
    heal: bool = False


def threshold_rules(settings: Settings, targets: list[str]) -> list[ThresholdRule]:
    """The guide's alert_thresholds about this host, ORCH's own dependencies, and one health rule per target.

    Host rules judge this host's series only: each host's sweep judges its own host (another host's
    silence is ``host_down``), so a host's alert is raised once per interval, by that host.
    """
    thresholds = settings.monitoring.alert_thresholds
    alerting = settings.monitoring.alerting
    wait = alerting.for_seconds
    stall = 2 * settings.monitoring.interval + 60  # a scheduled run this late means Prefect is not starting runs
    host = settings.monitoring.host_name
    urls = api_urls(settings)
    api = (host,) if len(urls) == 1 else tuple(urls)
    return [
        ThresholdRule("cpu_high", "cpu_percent", thresholds.cpu_percent, True, "warning", "%", wait, (host,)),
        ThresholdRule("memory_high", "memory_percent", thresholds.memory_percent, True, "warning", "%", wait,
                      (host,)),
        ThresholdRule("disk_full", "disk_usage_percent", thresholds.disk_usage_percent, True, "critical", "%", wait,
                      tuple(disk_subject(host, path) for path in settings.monitoring.disk_paths)),
        ThresholdRule("api_slow", "api_response_time_ms", thresholds.response_time_ms, True, "warning", " ms", wait,
                      api),
        ThresholdRule("api_errors", "api_error_rate_percent", thresholds.error_rate_percent, True, "warning", "%",
                      wait, (host,)),
        ThresholdRule("database_down", "database_up", 1, False, "critical", "", 0),
        # PRAGMA quick_check found damage (1): every write makes the loss at restore larger, so at once.
        ThresholdRule("database_corrupt", "database_corrupt", 0, True, "critical", "", 0),
        ThresholdRule("prefect_down", "prefect_up", 1, False, "critical", "", wait),
        ThresholdRule("prefect_stalled", "prefect_lag_seconds", stall, True, "critical", " s", 0),
        # Found and crashed in the same sweep (orch/monitoring/zombies.py): a warning that it happened.
        ThresholdRule("prefect_zombie_runs", "prefect_zombie_runs", thresholds.prefect_zombie_runs, True, "warning",
                      "", 0),
        ThresholdRule("target_down", "target_up", 1, False, "critical", "", alerting.target_for_seconds,
                      tuple(targets), heal=True),
    ]


def evaluate_threshold(settings: Settings, rule: ThresholdRule, subject: str, now: datetime) -> Observation | None:
    """Judge one series: how long has the newest run of bad samples lasted? None without samples."""
    window = timedelta(seconds=rule.for_seconds + 3 * settings.monitoring.interval)
    points = series(settings, rule.metric, subject, now - window)
    if not points:
        return None
    bad_since: datetime | None = None
    for stamp, value in reversed(points):
        if (value > rule.threshold) if rule.above else (value < rule.threshold):
            bad_since = stamp
        else:
            break
    latest_at, value = points[-1]
    target = subject if subject != HOST else "host"
    comparison = ">" if rule.above else "<"
    if bad_since is None:
        return Observation(rule.alert_name, target, "ok", rule.severity,
                           f"{rule.metric} {value:g}{rule.unit} on {target}", value, rule.threshold, heal=rule.heal,
                           latest_at=latest_at)
    lasted = (now - bad_since).total_seconds()
    state = "firing" if lasted >= rule.for_seconds else "pending"
    summary = (f"{rule.metric} {value:g}{rule.unit} {comparison} {rule.threshold:g}{rule.unit} on {target} "
               f"for {lasted:.0f} s")
    return Observation(rule.alert_name, target, state, rule.severity, summary, value, rule.threshold, bad_since,
                       rule.heal, latest_at)


def ewma(values: list[float], alpha: float) -> tuple[float, float]:
    """Exponentially weighted mean and standard deviation (West's incremental form)."""
    mean, variance = values[0], 0.0
    for value in values[1:]:
        delta = value - mean
        mean += alpha * delta
        variance = (1 - alpha) * (variance + alpha * delta * delta)
    return mean, math.sqrt(variance)


def evaluate_anomaly(settings: Settings, metric: str, now: datetime) -> Observation | None:
    """Is the newest sample far from what the recent past predicts? Judged beside the fixed thresholds."""
    alerting = settings.monitoring.alerting
    window = timedelta(seconds=settings.monitoring.interval * (alerting.ewma_min_samples * 3 + 1))
    host = settings.monitoring.host_name
    values = [value for _, value in series(settings, metric, host, now - window)]
    if len(values) < alerting.ewma_min_samples + 1:
        return None
    mean, deviation = ewma(values[:-1], alerting.ewma_alpha)
    # A flat history has no spread; a floor keeps a tiny wobble from being "infinitely" anomalous.
    spread = max(deviation, 0.01 * abs(mean), 0.5)
    latest = values[-1]
    limit = alerting.ewma_deviations * spread
    name = f"{metric}_anomaly"
    if abs(latest - mean) <= limit:
        return Observation(name, host, "ok", "warning", f"{metric} {latest:g} near its EWMA {mean:.1f}", latest,
                           round(mean + limit, 2))
    return Observation(name, host, "firing", "warning",
                       f"{metric} {latest:g} is {abs(latest - mean) / spread:.1f} standard deviations from its "
                       f"EWMA {mean:.1f}", latest, round(mean + limit if latest > mean else mean - limit, 2), now)


def evaluate_hosts(settings: Settings, now: datetime) -> list[Observation]:
    """``host_down`` for every other host seen sweeping: critical once its last sweep is older than
    ``monitoring.host_down_after``; ok again when it sweeps. Any host's sweep raises it for any other.

    A host unseen for longer than :data:`~orch.monitoring.hosts.KNOWN_FOR` is forgotten (decommissioned):
    its ``host_down`` is observed ok once more, saying so, so that the alert resolves instead of firing
    for ever with nothing left to judge it."""
    from orch.monitoring.hosts import KNOWN_FOR, down_after, forgotten_down_hosts, is_down, last_sweeps

    me, limit = settings.monitoring.host_name, down_after(settings)
    seen = last_sweeps(settings, now)
    found = [Observation("host_down", host, "ok", "critical", f"host {host} has not swept for over "
                         f"{KNOWN_FOR.days} day(s): forgotten (decommissioned?); it is judged again when it sweeps",
                         None, limit) for host in forgotten_down_hosts(settings, seen)]
    for host, last in seen.items():
        if host == me:
            continue
        silent = (now - last).total_seconds()
        if is_down(settings, last, now):
            found.append(Observation("host_down", host, "firing", "critical",
                                     f"host {host} has not swept for {silent:.0f} s (last sweep {last.isoformat()}, "
                                     f"down after {limit:g} s)", silent, limit, last + timedelta(seconds=limit)))
        else:
            found.append(Observation("host_down", host, "ok", "critical", f"host {host} swept {silent:.0f} s ago",
                                     silent, limit))
    return found


def evaluate(settings: Settings, targets: list[str], now: datetime) -> list[Observation]:
    """Every rule against the stored samples: this host's, the shared services', ``targets`` and other hosts."""
    found: list[Observation] = evaluate_hosts(settings, now)
    for rule in threshold_rules(settings, targets):
        for subject in rule.subjects:
            observation = evaluate_threshold(settings, rule, subject, now)
            if observation is not None:
                found.append(observation)
    for metric in settings.monitoring.alerting.ewma_metrics:
        observation = evaluate_anomaly(settings, metric, now)
        if observation is not None:
            found.append(observation)
    return found
