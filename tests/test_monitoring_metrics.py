"""Domain metrics for /metrics (read from the database, on SQLite and PostgreSQL), and the Prometheus and
Grafana files: every expression names only exported metrics, and the rules pass promtool when installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orch.config.schema import Settings
from orch.monitoring.collector import DomainCollector

INFRA = Path(__file__).resolve().parents[1] / "infra"
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "le", "inf", "nan"}


def scrape(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(DomainCollector(settings))
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _values(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for family in
            text_string_to_metric_families(generate_latest(registry).decode()) for sample in family.samples}


class SteppingClock:
    """Each reading is ``step`` seconds after the previous one: a reading of the task aggregates between two
    readings then "costs" ``step``; ``now`` can be moved past the period it is served again."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_costly_reading_of_the_task_totals_is_served_again_for_ten_times_its_cost(settings: Settings) -> None:
    """At 1,000,000 tasks the depth, totals and durations cost 0.5-2 s a scrape. A reading that cost more than
    0.25 s (here: 1 s by the collector's clock) is served again for 10 times that, while the locks are read
    live; a reading after the period is fresh; a reading as cheap as a normal table's is never reused."""
    from orch.dispatch.locks import LockManager
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.request import validate
    from orch.monitoring.collector import REUSE_AFTER_SECONDS, REUSE_FACTOR

    queue = TaskQueue(settings)

    def dispatch() -> None:
        queue.enqueue(validate({"core_id": "WORK_AI_01", "action": "noop"}, settings), "t")

    totals = ("orch_tasks_total", (("core_id", "WORK_AI_01"), ("status", "queued")))
    depth = ("orch_task_queue_depth", (("priority", "normal"),))
    locks = ("orch_locks_active", (("resource_type", "db"),))
    clock = SteppingClock(step=1.0)
    registry = CollectorRegistry()
    registry.register(DomainCollector(settings, clock=clock))
    dispatch()
    first = _values(registry)
    assert first[totals] == 1 and first[depth] == 1
    read_until = clock.now + REUSE_FACTOR * clock.step  # the reading ended at clock.now, having cost 1 s

    dispatch()
    LockManager(settings).acquire("db:orders", "flow:x", ttl=60)
    clock.now = read_until - 2 * clock.step  # the next check reads one step later: still inside the period
    again = _values(registry)
    assert (again[totals], again[depth]) == (1, 1), "the costly reading is served again"
    assert again[locks] == 1, "the rest is read live"

    clock.now = read_until
    fresh = _values(registry)
    assert (fresh[totals], fresh[depth]) == (2, 2), "after the period the aggregates are read again"

    cheap = CollectorRegistry()
    cheap.register(DomainCollector(settings, clock=SteppingClock(step=REUSE_AFTER_SECONDS / 2)))
    assert _values(cheap)[totals] == 2
    dispatch()
    assert _values(cheap)[totals] == 3, "a cheap reading is never reused"


def test_collector_reports_samples_queue_tasks_locks_alerts_and_heals(settings: Settings) -> None:
    from orch.dispatch.locks import LockManager
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.request import validate
    from orch.monitoring import alerts, healing
    from orch.monitoring.rules import Observation
    from orch.monitoring.samples import Sample, store
    from orch.storage.engine import session_scope
    from orch.storage.models import Task
    from orch.storage.types import utcnow

    store(settings, [Sample("cpu_percent", 42.5, "web-1"), Sample("memory_percent", 61, "web-1"),
                     Sample("disk_used_bytes", 1e9, "web-1:/"), Sample("host_sweep", 1, "web-1"),
                     Sample("target_up", 0, "web"), Sample("prefect_lag_seconds", 3)])
    queue = TaskQueue(settings)
    for priority in ("high", "high", "low"):
        queue.enqueue(validate({"core_id": "WORK_AI_01", "action": "noop", "priority": priority}, settings), "t")
    done, _ = queue.enqueue(validate({"core_id": "WORK_AI_02", "action": "noop"}, settings), "t")
    with session_scope(settings.database) as session:
        task = session.get(Task, done["task_id"])
        task.status, task.started_at = "completed", utcnow() - timedelta(seconds=2)
        task.finished_at = task.started_at + timedelta(seconds=2)
    LockManager(settings).acquire("db:orders", "flow:x", ttl=60)
    alerts.apply(settings, [Observation("target_down", "web", "firing", "critical", "down", 0, 1, heal=True)])
    healing.finish_run(settings, healing.start_run(settings, "web", "target_down", None), "healed")

    values = scrape(settings)
    assert values[("orch_monitor_scrape_ok", ())] == 1
    assert values[("orch_system_cpu_percent", (("host", "web-1"),))] == 42.5
    assert values[("orch_system_disk_usage_bytes", (("host", "web-1"), ("path", "/")))] == 1e9
    assert values[("orch_host_up", (("host", "web-1"),))] == 1
    assert values[("orch_target_up", (("target", "web"),))] == 0
    assert values[("orch_task_queue_depth", (("priority", "high"),))] == 2
    assert values[("orch_task_queue_depth", (("priority", "critical"),))] == 0
    assert values[("orch_tasks_total", (("core_id", "WORK_AI_01"), ("status", "queued")))] == 3
    done_labels = (("core_id", "WORK_AI_02"), ("status", "completed"))
    assert values[("orch_task_duration_seconds_count", done_labels)] == 1
    assert values[("orch_task_duration_seconds_sum", done_labels)] == pytest.approx(2, abs=0.01)
    assert values[("orch_task_duration_seconds_bucket", (*done_labels[:1], ("le", "1.0"), done_labels[1]))] == 0
    assert values[("orch_task_duration_seconds_bucket", (*done_labels[:1], ("le", "5.0"), done_labels[1]))] == 1
    assert values[("orch_locks_active", (("resource_type", "db"),))] == 1
    assert values[("orch_lock_acquisition_total", (("resource_type", "db"), ("status", "acquired")))] == 1
    assert values[("orch_lock_acquisition_total", (("resource_type", "db"), ("status", "timeout")))] == 0
    assert values[("orch_alerts_active", (("alert_name", "target_down"), ("severity", "critical"),
                                          ("state", "firing")))] == 1
    assert values[("orch_heal_runs_total", (("outcome", "healed"),))] == 1
    assert values[("orch_heal_runs_last_hour", (("target", "web"),))] == 1
    assert not any("task_id" in dict(labels) for _, labels in values)


def test_a_database_that_is_down_still_answers_the_scrape(isolated_env: Path) -> None:
    from orch.config.loader import load_settings

    broken = load_settings(environ={"ORCH_HOME": ".", "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"},
                           generate_secrets=False)
    assert scrape(broken) == {("orch_monitor_scrape_ok", ()): 0.0}


def exported_names() -> set[str]:
    """Every sample name /metrics can export: the API's own metrics and the domain collector's."""
    from orch.api.metrics import ApiMetrics

    names: set[str] = set()
    for metric in [*ApiMetrics().registry.collect(), *DomainCollector.__new__(DomainCollector).describe()]:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count"],
                    "gauge": [""]}.get(metric.type, [""])
        names |= {metric.name + suffix for suffix in suffixes}
    return names


def metric_names(expr: str) -> set[str]:
    """Identifiers an expression reads as series: strings, label matchers, ranges, grouping and functions removed."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"(?<![A-Za-z0-9_:])\d+(?:\.\d+)?(?:e[-+]?\d+)?", " ", expr)  # numbers, 1e-9 included
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        is_function = expr[match.end():].lstrip().startswith("(")
        if not is_function and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((INFRA / "prometheus" / "alert_rules.yml").read_text())
    found = [(f"rule {rule['alert']}", rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((INFRA / "grafana" / "orch-next-dashboard.json").read_text())
    found += [(f"panel {panel['title']}", target["expr"])
              for panel in dashboard["panels"] for target in panel["targets"]]
    return found


def test_every_rule_and_panel_expression_names_only_exported_metrics() -> None:
    exported = exported_names()
    assert {"orch_http_requests_total", "orch_task_queue_depth", "orch_system_cpu_percent",
            "orch_lock_wait_duration_seconds_sum", "orch_sse_connections_active"} <= exported
    unknown = {where: sorted(metric_names(expr) - exported) for where, expr in expressions()}
    assert {where: names for where, names in unknown.items() if names} == {}
    assert metric_names('rate(orch_nope_total{status=~"5.."}[5m]) / sum by (le) (x_bucket)') == {
        "orch_nope_total", "x_bucket"}  # the check itself can fail
    dashboard = json.loads((INFRA / "grafana" / "orch-next-dashboard.json").read_text())
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"Request rate", "Task queue depth by priority", "System resources", "Task outcomes", "Active alerts",
            "Healing runs"} <= titles


def test_rules_match_the_configured_thresholds_and_pass_promtool() -> None:
    from orch.config.schema import AlertThresholds

    rules = {rule["alert"]: rule for group in yaml.safe_load((INFRA / "prometheus" / "alert_rules.yml").read_text())[
        "groups"] for rule in group["rules"]}
    defaults = AlertThresholds()
    assert rules["OrchHighCpu"]["expr"].endswith(f"> {defaults.cpu_percent:g}")
    assert rules["OrchHighMemory"]["expr"].endswith(f"> {defaults.memory_percent:g}")
    assert rules["OrchDiskFull"]["expr"].endswith(f"> {defaults.disk_usage_percent:g}")
    assert rules["OrchSlowResponses"]["expr"].endswith(f"> {defaults.response_time_ms / 1000:g}")
    assert rules["OrchHighErrorRate"]["expr"].strip().endswith(f"> {defaults.error_rate_percent:g}")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    result = subprocess.run([promtool, "check", "rules", str(INFRA / "prometheus" / "alert_rules.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
