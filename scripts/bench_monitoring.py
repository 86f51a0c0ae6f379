#!/usr/bin/env python
"""Benchmark: what a monitoring sweep costs, how fast /metrics answers, and how long healing takes.

In one run, against a real Prefect server started here, a real SQLite ORCH database and a real HTTP
service on loopback as the target:

- **collection**: the sweep's measurements (system, API probe, queue, locks, database, Prefect readiness
  and lag, the target's health check) called in-process, wall and CPU time per sweep, p50/p95; beside
  the **naive baseline**, the guide-style script (``psutil.cpu_percent(interval=1)``, a new database
  engine and a new HTTP client per sweep);
- **sweep as a flow**: the ``monitor-sweep`` flow (Prefect task runs, storing, alert evaluation) in
  process, and as a deployment runs it (a fresh Python process per run), CPU per sweep and as a share
  of one core at the default 60 s interval;
- **/metrics**: the domain collector's scrape time over a database holding a week of samples at the
  default interval and 20,000 tasks;
- **time to heal**: sweeps every 5 s; the target is killed; detection (kill -> the sweep that fires),
  decision (firing -> the self-heal flow run starts, through the automation and a process worker) and
  action (run start -> target healthy again).

Writes ``bench_results/bench_monitoring.{json,md}``.

    python scripts/bench_monitoring.py [--sweeps 60] [--heals 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from bench_common import BenchError, clean_environ, log_tail, machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench_results"
BIN = Path(sys.executable).parent
INTERVAL = 5


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Service:
    """``python -m http.server`` with a /health file; the restart command is what self-healing runs."""

    def __init__(self, directory: Path) -> None:
        (directory / "www").mkdir(parents=True)
        (directory / "www" / "health").write_text("ok")
        self.port, self.pid_file = free_port(), directory / "service.pid"
        self.url = f"http://127.0.0.1:{self.port}/health"
        self.start_command = ["/bin/sh", "-c", (f"{sys.executable} -m http.server {self.port} --bind 127.0.0.1 "
                              f"--directory {directory / 'www'} >/dev/null 2>&1 & echo $! > {self.pid_file}")]

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        subprocess.run(self.start_command, check=True, timeout=30)
        self.wait(True, 30)

    def kill(self) -> None:
        os.kill(int(self.pid_file.read_text()), signal.SIGKILL)
        self.wait(False, 10)

    def wait(self, healthy: bool, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.healthy() != healthy:
            if time.monotonic() > deadline:
                raise BenchError(f"service never became {'healthy' if healthy else 'down'}")
            time.sleep(0.05)
        return time.monotonic()

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # never started, or already gone
            os.kill(int(self.pid_file.read_text()), signal.SIGKILL)


def start_prefect(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = open(home / "prefect-server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                "--analytics-off", "--no-ui"], env={**env, "PREFECT_HOME": str(home / "prefect")},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{api}/ready", timeout=2).status_code == 200:
                return process, api
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError("Prefect server did not start", log_tail(home / "prefect-server.log"))
        time.sleep(0.3)


def naive_collection(settings: Any, service: Any) -> None:
    """The guide-style sweep: blocking CPU sampling, a fresh engine and client every time."""
    from sqlalchemy import create_engine, text

    from orch.storage.engine import normalise_url

    psutil.cpu_percent(interval=1)
    psutil.virtual_memory()
    for path in settings.monitoring.disk_paths:
        psutil.disk_usage(path)
    psutil.net_io_counters()
    engine = create_engine(normalise_url(settings.database.url))
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.execute(text("SELECT priority, count(*) FROM tasks WHERE status = 'queued' GROUP BY priority"))
        connection.execute(text("SELECT count(*) FROM resource_locks"))
    engine.dispose()
    with httpx.Client(timeout=5) as client:
        for url in (f"http://127.0.0.1:{settings.api.port}/health", settings.prefect.resolved_api_url() + "/ready",
                    service.url):
            with contextlib.suppress(httpx.HTTPError):  # down is an answer too
                client.get(url)


def collectors(settings: Any) -> list[Any]:
    from orch.monitoring import samples, targets

    found: list[Any] = [lambda: samples.collect_system(settings),
                        lambda: samples.collect_api(settings, settings.monitoring.interval),
                        lambda: samples.collect_queue(settings), lambda: samples.collect_locks(settings),
                        lambda: samples.collect_database(settings), lambda: samples.collect_prefect(settings)]
    for target in targets.configured_targets(settings):
        found.append(lambda target=target: [targets.check_health(settings, target)])
    return found


def collection(settings: Any, pool: Any = None) -> None:
    """One sweep's measurements and the store; with ``pool``, concurrently, as the flow submits them."""
    from orch.monitoring import samples

    work = collectors(settings)
    results = list(pool.map(lambda f: f(), work)) if pool else [f() for f in work]
    samples.store(settings, [s for found in results for s in found if isinstance(s, samples.Sample)])


def timed(function: Any, runs: int) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        cpu, wall = cpu_seconds(), time.perf_counter()
        function()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((cpu_seconds() - cpu) * 1000)
    return {"runs": runs, "wall_p50_ms": round(pct(walls, 0.5), 1), "wall_p95_ms": round(pct(walls, 0.95), 1),
            "cpu_mean_ms": round(statistics.mean(cpus), 1), "cpu_p95_ms": round(pct(cpus, 0.95), 1)}


def flow_process_cpu(env: dict[str, str]) -> dict[str, float]:
    """One sweep in a fresh Python process, as the process worker runs each scheduled sweep."""
    code = "from flows.monitor_sweep import monitor_sweep; monitor_sweep()"
    cpus, walls = [], []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300, check=False)
        if result.returncode != 0:
            raise BenchError("sweep process failed", result.stderr.splitlines()[-8:])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        walls.append(time.perf_counter() - started)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"runs": 3, "wall_median_s": round(statistics.median(walls), 2),
            "cpu_median_s": round(statistics.median(cpus), 2)}


def fill_history(settings: Any, days: int, tasks: int) -> dict[str, int]:
    """A week of samples at the default interval (30 series) and ``tasks`` finished or queued tasks."""
    from sqlalchemy import insert

    from orch.storage.engine import session_scope
    from orch.storage.models import MonitorSample, Task
    from orch.storage.types import utcnow

    now = utcnow()
    series = [("cpu_percent", "host"), ("memory_percent", "host"), ("disk_usage_percent", "/"),
              ("disk_used_bytes", "/"), ("target_up", "web")] + [(f"metric_{i}", "host") for i in range(25)]
    sweeps = days * 86400 // 60
    rows = 0
    with session_scope(settings.database) as session:
        for start in range(0, sweeps, 2000):
            batch = [{"timestamp": now - timedelta(seconds=60 * n), "metric": m, "subject": s, "value": float(n % 100)}
                     for n in range(start, min(start + 2000, sweeps)) for m, s in series]
            session.execute(insert(MonitorSample), batch)
            rows += len(batch)
        statuses = ["completed"] * 8 + ["failed", "queued"]
        session.execute(insert(Task), [{
            "task_id": str(uuid.uuid4()), "core_id": f"WORK_AI_{n % 8:02d}", "action": "noop", "params": {},
            "priority": n % 4, "timeout": 60, "stay": False, "meta": {}, "owner": "bench", "max_retries": 0,
            "locks": [], "sort_key": float(n), "status": statuses[n % 10], "attempts": 1,
            "created_at": now, "updated_at": now, "started_at": now - timedelta(seconds=n % 50),
            "finished_at": now if statuses[n % 10] != "queued" else None} for n in range(tasks)])
    return {"samples": rows, "tasks": tasks}


def scrape_times(settings: Any, runs: int = 20) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from orch.monitoring.collector import DomainCollector

    registry = CollectorRegistry()
    registry.register(DomainCollector(settings))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - started) * 1000)
    return {"runs": runs, "p50_ms": round(pct(times, 0.5), 1), "p95_ms": round(pct(times, 0.95), 1)}


def heal_times(settings: Any, service: Service, env: dict[str, str], pool: str, heals: int,
               home: Path) -> list[dict[str, float]]:
    """Kill the target; sweep every INTERVAL s in this process (as the schedule would) until it is healthy."""
    from prefect.client.orchestration import get_client

    from flows.monitor_sweep import monitor_sweep
    from orch.monitoring.healing import list_runs

    worker_log = open(home / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process"],
                              cwd=ROOT, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, stdout=worker_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    results = []
    try:
        time.sleep(5)  # the worker's own start, not part of healing
        for _ in range(heals):
            monitor_sweep()  # healthy baseline
            time.sleep(INTERVAL / 2)  # the kill lands at a random point of the interval in real life
            service.kill()
            killed = time.monotonic()
            fired = None
            healed = None
            next_sweep = killed + INTERVAL / 2
            while healed is None:
                if time.monotonic() - killed > 180:
                    raise BenchError("target not healed within 180 s", log_tail(home / "worker.log"))
                if fired is None and time.monotonic() >= next_sweep:
                    if "firing:target_down@web" in monitor_sweep()["notices"]:
                        fired = time.monotonic()
                    next_sweep += INTERVAL
                if fired is not None and service.healthy():
                    healed, healed_wall = time.monotonic(), time.time()
                time.sleep(0.05)
            run = list_runs(settings, "web")[0]
            with get_client(sync_client=True) as client:
                flow_run = client.read_flow_run(uuid.UUID(run["flow_run_id"]))
            # Wall-clock start of the self-heal run, mapped onto this process's monotonic clock.
            started = healed - (healed_wall - flow_run.start_time.timestamp()) if flow_run.start_time else fired
            started = min(max(started, fired), healed)
            results.append({"detection_s": round(fired - killed, 2), "decision_s": round(started - fired, 2),
                            "action_s": round(healed - started, 2), "total_s": round(healed - killed, 2)})
            time.sleep(2)
            monitor_sweep()  # resolves the alert before the next round
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=60, help="collections measured (and naive: a tenth)")
    parser.add_argument("--heals", type=int, default=2, help="kill-and-heal rounds")
    args = parser.parse_args(argv)
    env = clean_environ()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        home = Path(tmp)
        server, api_url = start_prefect(home, env)
        service = Service(home / "svc")
        service.start()
        try:
            slack_port = free_port()  # nobody listens: notifications fail fast and are logged, as designed
            config = {"database": {"url": f"sqlite:///{home}/orch.db"}, "data_dir": str(home / "data"),
                      "logging": {"file": None}, "api": {"port": free_port()},
                      "monitoring": {"orch_targets": False,
                                     # repeated kill/heal rounds would otherwise be held as flapping
                                     "alerting": {"for_seconds": 0, "flap_threshold": 100},
                                     "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100,
                                                          "disk_usage_percent": 100},
                                     "self_healing": {"max_runs_per_hour": 100, "backoff_seconds": 0.5,
                                                      "settle_seconds": 10},
                                     "targets": [{"name": "web", "health_check": {"url": service.url, "timeout": 2},
                                                  "restart": {"command": service.start_command}}]},
                      "notifications": {"slack": {"webhook_url": f"http://127.0.0.1:{slack_port}/slack"}}}
            (home / "orch.yaml").write_text(yaml.safe_dump(config))
            env.update({"PREFECT_API_URL": api_url, "ORCH_CONFIG_PATH": str(home / "orch.yaml"),
                        "ORCH_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"})
            os.environ.update(env)
            from orch.config.runtime import get_settings
            from orch.storage.migrate import upgrade

            settings = get_settings()
            upgrade(settings.database, create_database=True)
            collection(settings)  # warm: imports, engine, first CPU reading
            sequential = timed(lambda: collection(settings), args.sweeps)
            with ThreadPoolExecutor(8) as threads:
                ours = timed(lambda: collection(settings, threads), args.sweeps)
            naive = timed(lambda: naive_collection(settings, service), max(5, args.sweeps // 10))
            from flows.monitor_sweep import monitor_sweep

            monitor_sweep()
            in_flow = timed(monitor_sweep, 10)
            process = flow_process_cpu(env)

            from blocks.register import register_blocks
            from deployments.apply import ensure_work_pools
            from deployments.automations import apply_automations

            pool = f"bench-{uuid.uuid4().hex[:6]}"
            ensure_work_pools([pool])
            register_blocks(settings)
            deployed = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "self-heal/auto",
                                       "--pool", pool], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                                      check=False)
            if deployed.returncode != 0:
                raise BenchError("prefect deploy failed", (deployed.stdout + deployed.stderr).splitlines()[-8:])
            apply_automations(settings)
            heals = heal_times(settings, service, env, pool, args.heals, home)

            history = fill_history(settings, days=7, tasks=20000)
            scrape = scrape_times(settings)
        finally:
            service.stop()
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()

    core_share_in_process = ours["cpu_mean_ms"] / 1000 / 60 * 100
    core_share_flow = in_flow["cpu_mean_ms"] / 1000 / 60 * 100
    core_share_process = process["cpu_median_s"] / 60 * 100
    worst = max(heals, key=lambda h: h["total_s"])
    restart = max(h["action_s"] for h in heals)
    report = {"machine": info, "collection": ours, "collection_sequential": sequential, "naive_collection": naive,
              "sweep_flow_in_process": in_flow,
              "sweep_flow_process": process, "scrape": scrape, "history": history, "heals": heals,
              "interval_s": INTERVAL,
              "goals": {
                  "collection_p95_under_50ms": ours["wall_p95_ms"] < 50,
                  "sweep_under_1pct_core_in_process": core_share_flow < 1,
                  "sweep_under_1pct_core_as_deployment_process": core_share_process < 1,
                  "heal_within_interval_restart_3s": worst["total_s"] <= INTERVAL + restart + 3}}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_monitoring.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        "| figure | ORCH | naive baseline |", "|---|---|---|",
        (f"| collection wall p50 / p95 (ms), concurrent as in the flow | {ours['wall_p50_ms']} / "
         f"{ours['wall_p95_ms']} | {naive['wall_p50_ms']} / {naive['wall_p95_ms']} |"),
        (f"| collection wall p50 / p95 (ms), one after the other | {sequential['wall_p50_ms']} / "
         f"{sequential['wall_p95_ms']} | – |"),
        f"| collection CPU per sweep, mean (ms) | {ours['cpu_mean_ms']} | {naive['cpu_mean_ms']} |",
        (f"| monitor-sweep flow in process: wall p50 / p95 (ms), CPU mean (ms) | {in_flow['wall_p50_ms']} / "
         f"{in_flow['wall_p95_ms']}, {in_flow['cpu_mean_ms']} | – |"),
        (f"| monitor-sweep in a fresh process (as a deployment run): wall, CPU (s) | {process['wall_median_s']}, "
         f"{process['cpu_median_s']} | – |"),
        (f"| share of one core at the 60 s default: collection / flow in process / deployment process | "
         f"{core_share_in_process:.2f} % / {core_share_flow:.2f} % / {core_share_process:.2f} % | – |"),
        (f"| /metrics domain scrape p50 / p95 (ms), {history['samples']:,} samples, {history['tasks']:,} tasks | "
         f"{scrape['p50_ms']} / {scrape['p95_ms']} | – |"),
    ]
    for n, heal in enumerate(heals, 1):
        rows.append(f"| heal #{n} ({INTERVAL} s interval): detection / decision / action = total (s) | "
                    f"{heal['detection_s']} / {heal['decision_s']} / {heal['action_s']} = {heal['total_s']} | – |")
    goals = [f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in report["goals"].items()]
    header = (f"{info['cpu_count']} CPUs, Python {info['python']}, Prefect {info['prefect']}, {info['timestamp']}, "
              f"load average at start {info['load_avg_1m']}.")
    (RESULTS / "bench_monitoring.md").write_text("\n".join([header, "", *rows, "", *goals]) + "\n")
    print("\n".join([header, "", *rows, "", *goals]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
