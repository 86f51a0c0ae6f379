"""Hosts are first-class: two ORCH worker processes with different ``monitoring.host_name`` on one machine,
one Prefect server (the session's) and one PostgreSQL ORCH database, as two hosts would share them.

Each host sweeps itself, once per interval, from its own work queue; samples name their host and CPU is
a delta against the same host's previous sample; a target living on host B is healed by a run that
B's worker executes (its side effect carries B's environment); a target on a host with no worker
escalates at once with the reason, once although both hosts check it; B stopped, A's sweep raises
``host_down`` for B, and ``/health?detailed=true``, ``/metrics`` and the hosts list say so.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from support import wait_until
from workers import PROJECT_ROOT, QUIET_THRESHOLDS, inprocess_worker, unreachable_target

from orch.config.runtime import get_settings, reset_settings_cache
from orch.storage.migrate import upgrade


def test_cpu_deltas_are_per_host(settings: Any) -> None:
    """Two hosts' previous samples differ; each host's CPU is judged against its own, never the other's."""
    from datetime import timedelta

    from orch.monitoring.samples import Sample, collect_system, store
    from orch.storage.types import utcnow

    times = psutil.cpu_times()
    busy, total = sum(times) - times.idle - getattr(times, "iowait", 0.0), sum(times)
    # 100 s of CPU ago, host x was 50 % busy since and host y 90 %; y's sample is the newer one.
    store(settings, [Sample("cpu_busy_seconds", busy - 50, "x"), Sample("cpu_total_seconds", total - 100, "x")],
          at=utcnow() - timedelta(seconds=2))
    store(settings, [Sample("cpu_busy_seconds", busy - 90, "y"), Sample("cpu_total_seconds", total - 100, "y")],
          at=utcnow() - timedelta(seconds=1))
    found = {}
    for host in ("x", "y"):
        settings.monitoring.host_name = host
        found[host] = {(s.metric, s.subject): s.value for s in collect_system(settings)}
    assert abs(found["x"][("cpu_percent", "x")] - 50) < 5, found["x"]
    assert abs(found["y"][("cpu_percent", "y")] - 90) < 5, found["y"]
    assert {subject for _, subject in found["x"]} <= {"x", *(f"x:{p}" for p in settings.monitoring.disk_paths)}


def test_host_down_is_judged_from_the_last_sweep(settings: Any) -> None:
    from datetime import timedelta

    from orch.monitoring import rules
    from orch.monitoring.hosts import SWEEP_METRIC, hosts_view
    from orch.monitoring.samples import Sample, store
    from orch.storage.types import utcnow

    settings.monitoring.host_name, settings.monitoring.interval = "a", 10  # down after 60 s
    now = utcnow()
    store(settings, [Sample(SWEEP_METRIC, 1, "a")], at=now)
    store(settings, [Sample(SWEEP_METRIC, 1, "b")], at=now - timedelta(seconds=30))
    store(settings, [Sample(SWEEP_METRIC, 1, "c")], at=now - timedelta(seconds=61))
    found = {(o.alert_name, o.target): o.state for o in rules.evaluate_hosts(settings, now)}
    assert found == {("host_down", "b"): "ok", ("host_down", "c"): "firing"}  # no host judges itself
    assert [(h["host"], h["down"]) for h in hosts_view(settings)] == [("a", False), ("b", False), ("c", True)]


def test_a_host_forgotten_after_a_day_resolves_its_host_down(settings: Any) -> None:
    """A decommissioned host's ``host_down`` resolves once the host drops off the known hosts, instead of
    firing for ever with nothing left to judge it; it is judged again if it ever sweeps."""
    from datetime import timedelta

    from orch.monitoring import alerts, rules
    from orch.monitoring.hosts import KNOWN_FOR, SWEEP_METRIC
    from orch.monitoring.samples import Sample, store
    from orch.storage.types import utcnow

    settings.monitoring.host_name, settings.monitoring.interval = "a", 10
    now = utcnow()
    store(settings, [Sample(SWEEP_METRIC, 1, "gone")], at=now - timedelta(seconds=61))
    alerts.apply(settings, rules.evaluate_hosts(settings, now), now)
    assert [(a["target"], a["state"]) for a in alerts.list_alerts(settings) if a["alert_name"] == "host_down"] \
        == [("gone", "firing")]
    later = now + KNOWN_FOR + timedelta(minutes=1)
    observed = rules.evaluate_hosts(settings, later)
    assert [(o.target, o.state) for o in observed] == [("gone", "ok")] and "forgotten" in observed[0].summary
    alerts.apply(settings, observed, later)
    assert [(a["target"], a["state"]) for a in alerts.list_alerts(settings) if a["alert_name"] == "host_down"] \
        == [("gone", "resolved")]


def worker(pool: str, host: str, label: str, log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """One "host": ORCH's worker process with its in-process pool, its own host name and a marker variable."""
    return inprocess_worker(pool, host, log, "--no-dispatcher", "--sweep",  # a scratch pool: sweep all the same
                            env={"ORCH_MONITORING__HOST_NAME": host, "ORCH_TEST_PROCESS": label,
                                 "PREFECT_WORKER_QUERY_SECONDS": "2", "ORCH_LOG_LEVEL": "INFO"})


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_hosts_sweep_themselves_heal_their_targets_and_notice_a_lost_host(
        prefect_server: str, isolated_env: Path, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from deployments.apply import ensure_work_pools
    from flows.self_heal import self_heal
    from orch.dispatch.lease_owner import EXECUTOR_LABEL
    from orch.monitoring.alerts import list_alerts
    from orch.monitoring.healing import list_runs
    from orch.monitoring.hosts import hosts_view, sweep_deployment

    suffix = uuid.uuid4().hex[:6]
    host_a, host_b, ghost = f"a-{suffix}", f"b-{suffix}", f"ghost-{suffix}"
    healed = tmp_path / "healed"
    config = {
        "database": {"url": pg_url},
        "monitoring": {
            "interval": 3, "host_down_after": 15, "orch_targets": False,
            "alert_thresholds": QUIET_THRESHOLDS,
            "alerting": {"for_seconds": 0, "ewma_min_samples": 1000},
            "self_healing": {"max_retries": 1, "settle_seconds": 30},
            "targets": [
                {"name": "svc-b", "host": host_b, "health_check": {"command": ["test", "-f", str(healed)]},
                 "restart": {"command": ["/bin/sh", "-c", f'echo "$ORCH_TEST_PROCESS" > {healed}']}},
                unreachable_target("svc-ghost", host=ghost)]}}
    config_path = isolated_env / "orch.yaml"
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ORCH_CONFIG_PATH", str(config_path))
    reset_settings_cache()
    settings = get_settings()
    upgrade(settings.database, create_database=True)
    pool = f"hosts-{suffix}"
    ensure_work_pools([pool], inprocess=[pool])
    with get_client(sync_client=True) as client:
        heal_id = client.create_deployment(client.create_flow_from_name(self_heal.name), "auto", work_pool_name=pool,
                                           path=str(PROJECT_ROOT), entrypoint="flows/self_heal.py:self_heal")
        sweeps: dict[str, Any] = {}

        def runs_of(deployment_id: Any) -> list[Any]:
            return client.read_flow_runs(limit=200, deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[deployment_id])))

        def completed_sweeps(host: str) -> list[Any]:
            if host not in sweeps:
                with contextlib.suppress(Exception):
                    sweeps[host] = client.read_deployment_by_name(f"monitor-sweep/{sweep_deployment(host)}").id
            if host not in sweeps:
                return []
            return [run for run in runs_of(sweeps[host]) if run.state and run.state.is_completed()]

        logs = {host: tmp_path / f"{host}.log" for host in (host_a, host_b)}

        def tail() -> str:
            return "\n".join(f"--- {host}\n{log.read_text()[-2500:]}" for host, log in logs.items() if log.exists())

        try:
            with worker(pool, host_a, "A", logs[host_a]) as proc_a, worker(pool, host_b, "B", logs[host_b]) as proc_b:
                pids = {host_a: proc_a.pid, host_b: proc_b.pid}

                def alive() -> None:
                    assert proc_a.poll() is None and proc_b.poll() is None, "a worker exited"

                # Each host sweeps itself, from its own queue, in its own process.
                for host in (host_a, host_b):
                    done = wait_until(lambda h=host: alive() or (len(found := completed_sweeps(h)) >= 2 and found),
                                      240, f"two sweeps of host {host}", details=tail)
                    for run in done:
                        assert run.work_queue_name == f"host-{host}", run.work_queue_name
                        assert run.labels[EXECUTOR_LABEL].split(":")[1] == str(pids[host])
                    starts = [run.expected_start_time for run in runs_of(sweeps[host])]
                    assert len(starts) == len(set(starts))  # one run per interval slot, never two
                from orch.monitoring.samples import latest

                values = latest(settings)
                for host in (host_a, host_b):
                    assert ("cpu_percent", host) in values and ("cpu_total_seconds", host) in values
                    assert values[("host_sweep", host)] == 1.0

                # svc-b lives on B: only B's sweep checks it, and its heal runs in B's process.
                def healed_run() -> Any:
                    alive()
                    return [run for run in list_runs(settings, "svc-b") if run["outcome"] == "healed"]

                # A bound, not a pace: on a loaded CI machine this test's Prefect server (SQLite) answered the
                # worker 503 until it reported the first heal run Crashed, 2.5 min after the request; the
                # next sweep then asked again (alerts.lost_heals), and that run must still fit in.
                (heal,) = wait_until(healed_run, 420, "svc-b to be healed", details=tail)
                assert healed.read_text().strip() == "B"
                flow_run = client.read_flow_run(uuid.UUID(heal["flow_run_id"]))
                assert flow_run.work_queue_name == f"host-{host_b}"
                assert flow_run.labels[EXECUTOR_LABEL].split(":")[1] == str(proc_b.pid)

                # svc-ghost's host has no worker: the heal escalates at once, with the reason, once.
                def escalated() -> Any:
                    alive()
                    return list_runs(settings, "svc-ghost")

                (ghost_heal,) = wait_until(escalated, 180, "svc-ghost's heal to escalate", details=tail)
                assert ghost_heal["outcome"] == "no_worker", ghost_heal
                assert f"no ORCH worker has ever served host {ghost}" in ghost_heal["steps"][0]["reason"]
                assert client.read_flow_run(uuid.UUID(ghost_heal["flow_run_id"])).work_queue_name in (
                    f"host-{host_a}", f"host-{host_b}")  # on a host that has a worker: the sweeping one
                assert len(list_runs(settings, "svc-ghost")) == 1  # checked by both hosts, escalated once

                # B stops: A's sweep raises host_down for it.
                proc_b.send_signal(signal.SIGTERM)
                assert proc_b.wait(60) == 0, tail()

                def host_down() -> Any:
                    assert proc_a.poll() is None, "worker A exited"
                    return [a for a in list_alerts(settings) if a["alert_name"] == "host_down"
                            and a["target"] == host_b and a["state"] == "firing"]

                (down,) = wait_until(host_down, 120, f"host_down for {host_b}", details=tail)
                assert down["severity"] == "critical" and f"host {host_b} has not swept" in down["summary"]
                view = {h["host"]: h for h in hosts_view(settings)}
                assert view[host_b]["down"] and f"host_down@{host_b}" in view[host_b]["alerts"]
                assert not view[host_a]["down"]
        finally:
            for deployment_id in [heal_id, *sweeps.values()]:
                for run in runs_of(deployment_id):
                    with contextlib.suppress(Exception):
                        client.delete_flow_run(run.id)
                with contextlib.suppress(Exception):
                    client.delete_deployment(deployment_id)
            with contextlib.suppress(Exception):
                client.delete_work_pool(pool)


def test_health_and_metrics_list_hosts(api_factory: Any) -> None:
    """``/health?detailed=true`` and ``/metrics`` name each host, its last sweep and whether it is down."""
    from datetime import timedelta

    from orch.monitoring.hosts import SWEEP_METRIC
    from orch.monitoring.samples import Sample, store
    from orch.storage.types import utcnow

    api = api_factory(ORCH_MONITORING__HOST_NAME="a")
    now = utcnow()
    store(api.settings, [Sample(SWEEP_METRIC, 1, "a"), Sample("cpu_percent", 12.5, "a")], at=now)
    store(api.settings, [Sample(SWEEP_METRIC, 1, "b")], at=now - timedelta(hours=1))
    answer = api.client.get("/health", params={"detailed": "true"}, headers=api.headers("admin"))
    assert answer.status_code in (200, 503), answer.text
    hosts = {h["host"]: h for h in answer.json()["details"]["hosts"]}
    assert not hosts["a"]["down"] and hosts["b"]["down"], hosts
    metrics = api.client.get("/metrics", headers=api.headers("admin")).text
    assert 'orch_system_cpu_percent{host="a"} 12.5' in metrics
    assert 'orch_host_up{host="b"} 0.0' in metrics and 'orch_host_up{host="a"} 1.0' in metrics


def test_a_host_whose_worker_stopped_polling_has_no_live_worker_at_once(prefect_server: str,
                                                                       isolated_env: Path) -> None:
    """Prefect keeps a work queue READY for 60 s after its last poll, so a heal sent to a host whose worker
    had just died waited in its queue for nobody. A queue not polled for ``stale_after`` is judged on the
    Prefect server's clock, while Prefect still calls it READY (only that branch says "was last polled")."""
    import os

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from orch.config.loader import load_settings
    from orch.monitoring.hosts import host_queue, stale_after, worker_state

    settings = load_settings(environ={"ORCH_HOME": str(isolated_env), "PREFECT_API_URL": prefect_server,
                                      "PREFECT_API_AUTH_STRING": os.environ.get("PREFECT_API_AUTH_STRING", ""),
                                      "ORCH_PREFECT__WORKER_POLL_SECONDS": "0.5"}, generate_secrets=False)
    assert stale_after(settings) == 10.0  # five polls of 0.5 s, but never less than the floor
    pool, host = f"stale-{uuid.uuid4().hex[:8]}", "gone-host"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        try:
            assert "has ever served" in (worker_state(settings, pool, host) or "")
            client.create_work_queue(name=host_queue(host), work_pool_name=pool)

            def polled_and_live() -> bool:
                client.get_scheduled_flow_runs_for_work_pool(pool, work_queue_names=[host_queue(host)])
                return worker_state(settings, pool, host) is None

            wait_until(polled_and_live, 60, "a polled queue judged live")
            gone = wait_until(lambda: worker_state(settings, pool, host), 60, "the unpolled queue judged gone")
            assert "was last polled" in gone and "by the Prefect server's clock" in gone, gone
        finally:
            client.delete_work_pool(pool)
