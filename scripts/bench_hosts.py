"""Several hosts for real (issue 18): what losing a host costs, what a second worker host adds, what a sweep costs.

The hosts are tests/netns.py's network namespaces (the topology of tests/test_netns_hosts.py): host a runs
PostgreSQL, Redis and the Prefect server on PostgreSQL; hosts b and c run ORCH's worker and API. Needs root
(``ip netns``), PostgreSQL's server binaries and redis-server. Three measurements, on one topology:

1. **Sweep cost per host.** b's worker sweeps (``monitoring.interval`` s), c's worker is the same process
   with ``--no-sweep`` (it polls the same pool, runs no sweep); neither dispatches. Over the same window the
   CPU time of b's worker minus c's, per sweep b stored (``host_sweep`` samples), is one sweep's cost; as a
   share of a core at this interval and at the default 60 s. Goal: < 1 % of a core.
2. **Throughput with one worker host and with two.** ``noop`` tasks sent through both APIs; b's worker alone,
   then b's and c's: tasks per second from the first start to the last end, by the database's clock.
   Reported, not judged: one machine has two cores (and here shares them with other work).
3. **Host loss.** ``sleep`` tasks through both APIs; once c holds leases it is cut (link down, processes
   frozen); from that moment to each of its tasks starting again elsewhere. Goal: <= lease + 5 s.

``python scripts/bench_hosts.py [--tasks N] [--lease S] [--sweep-window S]`` writes
``bench_results/bench_hosts.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
from bench_common import BenchError, machine_info, run_bench, spread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the topology is the test's own (tests/netns.py), and its wait rule

from netns import (  # noqa: E402
    Topology,
    cannot_create_namespaces,
    database_now,
    dispatch_burst,
    events,
    finished,
    held_by,
    restarted_after,
    running_dispatch_runs,
)
from support import wait_until  # noqa: E402

RESULTS = ROOT / "bench_results"
INTERVAL = 15  # seconds between sweeps while measuring (at 5 s a loaded 2-core machine fell behind)
DEFAULT_INTERVAL = 60  # monitoring.interval's default
GOAL_SWEEP_PERCENT = 1.0
GOAL_MARGIN_S = 5.0  # host loss: its tasks run elsewhere within lease + this


def _cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _sweeps(settings: Any, host: str, since: Any, until: Any) -> int:
    from sqlalchemy import func, select

    from orch.monitoring.hosts import SWEEP_METRIC
    from orch.storage.engine import session_scope
    from orch.storage.models import MonitorSample

    with session_scope(settings.database) as session:
        return int(session.scalar(select(func.count()).select_from(MonitorSample).where(
            MonitorSample.metric == SWEEP_METRIC, MonitorSample.subject == host,
            MonitorSample.timestamp > since, MonitorSample.timestamp <= until)) or 0)


def sweep_cost(topology: Topology, settings: Any, window: float) -> dict[str, Any]:
    from orch.monitoring.hosts import last_sweeps

    sweeping = topology.start_worker("b", dispatcher=False, label="sweep-b")
    idle = topology.start_worker("c", dispatcher=False, sweep=False, label="nosweep-c")
    wait_until(lambda: "b" in last_sweeps(settings), 300, "host b's first sweep")
    first = last_sweeps(settings)["b"]
    wait_until(lambda: last_sweeps(settings)["b"] > first, 120, "host b's second sweep")  # both started up
    started, cpu_b, cpu_c = database_now(settings), _cpu(sweeping.pid), _cpu(idle.pid)
    wait_until(lambda: (database_now(settings) - started).total_seconds() >= window, window + 60,
               f"{window:g} s of sweeps", interval=1)
    ended = database_now(settings)
    used_b, used_c = _cpu(sweeping.pid) - cpu_b, _cpu(idle.pid) - cpu_c
    seconds = (ended - started).total_seconds()
    count = _sweeps(settings, "b", started, ended)
    topology.stop("b", "sweep-b")
    topology.stop("c", "nosweep-c")
    if count == 0:
        raise BenchError("host b did not sweep while measured", topology.tail("sweep-b").splitlines()[-8:])
    per_sweep = max(used_b - used_c, 0.0) / count
    return {"window_s": round(seconds, 1), "sweeps": count, "interval_s": INTERVAL,
            "worker_cpu_s": round(used_b, 3), "baseline_cpu_s": round(used_c, 3),
            "cpu_s_per_sweep": round(per_sweep, 4),
            "percent_of_core_at_interval": round(100 * per_sweep / INTERVAL, 2),
            "percent_of_core_at_60s": round(100 * per_sweep / DEFAULT_INTERVAL, 3),
            "goal_percent": GOAL_SWEEP_PERCENT}


def throughput(topology: Topology, settings: Any, hosts: list[str], tasks: int) -> dict[str, Any]:
    ids = dispatch_burst(topology, ["b", "c"], tasks, 0)
    wait_until(lambda: finished(settings, ids) == tasks, 900, f"{tasks} tasks on {len(hosts)} worker host(s)",
               interval=0.5)
    stamps = events(settings, ids, "task.started", "task.completed")
    first = min(at for _id, kind, at, _data in stamps if kind == "task.started")
    last = max(at for _id, kind, at, _data in stamps if kind == "task.completed")
    by_host: dict[str, int] = {}
    for _id, kind, _at, data in stamps:
        if kind == "task.started":
            by_host[data["dispatcher"].split(":")[0]] = by_host.get(data["dispatcher"].split(":")[0], 0) + 1
    seconds = (last - first).total_seconds()
    return {"worker_hosts": hosts, "tasks": tasks, "seconds": round(seconds, 2),
            "tasks_per_s": round(tasks / seconds, 1), "started_by_host": by_host}


def host_loss(topology: Topology, settings: Any, tasks: int, lease: float) -> dict[str, Any]:
    ids = dispatch_burst(topology, ["b", "c"], tasks, 0.2)
    wait_until(lambda: finished(settings, ids) >= tasks // 4 and held_by(settings, "c"), 600,
               "a quarter of the tasks done and host c holding leases", interval=0.1)
    cut_at = database_now(settings)
    topology.cut("c")
    held = held_by(settings, "c")
    wait_until(lambda: finished(settings, ids) == tasks, 900, "every task to end", interval=0.5)
    delays = list(restarted_after(settings, held, cut_at).values())
    if len(delays) != len(held):
        raise BenchError(f"{len(held) - len(delays)} of host c's {len(held)} task(s) never ran again")
    return {"tasks": tasks, "lease_s": lease, "held_by_lost_host": len(held),
            "to_running_elsewhere_s": spread(delays), "goal_s": lease + GOAL_MARGIN_S,
            "met": max(delays) <= lease + GOAL_MARGIN_S}


def bench(workdir: Path, tasks: int, lease: float, window: float) -> dict[str, Any]:
    reason = cannot_create_namespaces()
    if reason is not None:
        raise BenchError(f"this machine cannot build hosts as network namespaces: {reason}")
    topology = Topology(workdir / "hosts")
    try:
        topology.build()
        topology.start_services()
        topology.write_config(lease, INTERVAL, 4 * INTERVAL + 30, core_concurrency=50, concurrency=16)
        settings = topology.prepare_orch()
        report: dict[str, Any] = {"machine": machine_info(), "sweep": sweep_cost(topology, settings, window)}
        for name in ("b", "c"):
            topology.start_api(name)
        topology.start_worker("b")
        wait_until(lambda: len(running_dispatch_runs(topology)) >= 1, 300, "b's dispatcher", ignore=(httpx.HTTPError,))
        one = throughput(topology, settings, ["b"], tasks)
        topology.start_worker("c")
        wait_until(lambda: len(running_dispatch_runs(topology)) >= 2, 300, "c's dispatcher", ignore=(httpx.HTTPError,))
        two = throughput(topology, settings, ["b", "c"], tasks)
        report["throughput"] = {"one_host": one, "two_hosts": two}
        report["host_loss"] = host_loss(topology, settings, tasks, lease)
        return report
    except AssertionError as exc:  # a wait that timed out: say where, with the logs
        raise BenchError(str(exc).splitlines()[0], topology.tail().splitlines()[-30:]) from None
    finally:
        topology.close()


def write(report: dict[str, Any]) -> str:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_hosts.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    sweep, loss = report["sweep"], report["host_loss"]
    one, two = report["throughput"]["one_host"], report["throughput"]["two_hosts"]
    delays = loss["to_running_elsewhere_s"]
    lines = [
        "# Several hosts (network namespaces on one machine)", "",
        f"{report['machine']['timestamp']}, {report['machine']['cpu_count']} cores, load "
        f"{report['machine']['load_avg_1m']}; scripts/bench_hosts.py", "",
        "| figure | measured | goal |", "| --- | --- | --- |",
        f"| host lost to its tasks running elsewhere (lease {loss['lease_s']:g} s, {loss['held_by_lost_host']} "
        f"tasks held) | median {delays['median']} s, max {delays['max']} s | <= {loss['goal_s']:g} s "
        f"({'met' if loss['met'] else 'not met'}) |",
        f"| throughput, one worker host ({one['tasks']} noop tasks) | {one['tasks_per_s']} tasks/s | reported |",
        f"| throughput, two worker hosts | {two['tasks_per_s']} tasks/s ({two['started_by_host']}) | reported |",
        f"| one sweep's CPU (worker minus a non-sweeping worker, {sweep['sweeps']} sweeps) | "
        f"{sweep['cpu_s_per_sweep']} CPU-s: {sweep['percent_of_core_at_interval']} % of a core at "
        f"{sweep['interval_s']} s, {sweep['percent_of_core_at_60s']} % at 60 s | < {sweep['goal_percent']:g} % |",
        ""]
    text = "\n".join(lines)
    (RESULTS / "bench_hosts.md").write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--lease", type=float, default=5.0, help="dispatch.lease_seconds (s)")
    parser.add_argument("--sweep-window", type=float, default=60.0, help="seconds of sweeps measured")
    args = parser.parse_args()
    return run_bench("bench-hosts-", lambda workdir: bench(workdir, args.tasks, args.lease, args.sweep_window),
                     write)


if __name__ == "__main__":
    sys.exit(main())
