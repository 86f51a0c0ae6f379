#!/usr/bin/env python
"""Benchmark: what a monitoring sweep costs, how fast /metrics answers, and how long healing takes.

In one run, against a real Prefect server started here, a real SQLite ORCH database and a real HTTP
service on loopback as the target:

- **collection**: the sweep's measurements (system, API probe, queue, locks, database, Prefect readiness
  and lag, the target's health check) called in-process, wall and CPU time per sweep, p50/p95; beside
  the **naive baseline**, the guide-style script (``psutil.cpu_percent(interval=1)``, a new database
  engine and a new HTTP client per sweep);
- **sweep as a flow**: the ``monitor-sweep`` flow (Prefect task runs, storing, alert evaluation) called
  in this process; then **as production runs it**: the host's own sweep deployment
  (``monitor-sweep/host-<name>`` on queue ``host-<name>``, registered by ORCH's worker as it starts, every
  5 s here) on a scratch in-process pool, executed by ORCH's worker process (``python -m orch.stack.worker
  --sweep``, started with ``orch up``'s environment), the worker's CPU per sweep beyond its idle cost
  (measured after, 30 s with the schedule paused) and the Prefect server's; **baseline**: the same flow in
  a fresh Python process, as a process worker runs each run;
- **/metrics**: the domain collector's scrape time over a database holding a week of samples at the
  default interval and 20,000 tasks;
- **time to heal**: sweeps every 5 s by the schedule in the worker; the target is killed at a random
  point of the interval; detection (kill -> the firing is recorded), decision (-> the ``self-heal`` run
  starts: the sweep creating it on the host's queue, then the worker starting it) and action (-> healthy
  again), all on the wall clock; **baseline**: ``self-heal`` on a process worker (a new process per run,
  polling every ``prefect.worker_poll_seconds``) with sweeps every 5 s called by this script;
- **failures in a row**: the target killed again as soon as each heal brought it back (its alert still
  firing), three times; kill -> healthy for each;
- the worker's stop on SIGTERM;
- **the user's path** (issue 15: 45 s for a first heal at ``monitoring.interval: 5``): a fresh ``orch up`` in
  a home of its own, the target killed after two healthy sweeps and again as soon as each heal brought it
  back, each hop timed (kill -> the sweep that sees it -> it emits ``orch.alert.firing`` -> it creates the
  heal run -> the worker starts it -> healthy; and the sweep's task runs, where its time goes); the previous
  path (the ``orch-alert-firing`` automation creating the run) cannot run beside it without changing what is
  measured: ``--automation-baseline`` adds such an automation (``RunDeployment`` of a copy of
  ``self-heal/auto`` on a pool nobody serves, so it heals nothing twice) and times firing emitted -> its
  run created, but the two creations then compete for the Prefect server's SQLite database; then the
  worker SIGKILLed and the time until none of its runs is left
  Running (zombies) and it is back online; and on that stack's server the cause of issue 15: how long
  after the deploy sweep runs every 5 s exist, as ``orch up`` now deploys (the configured interval)
  against the **baseline** of the previous path (``prefect.yaml``'s 60 s deployed, then the schedule
  corrected).

Writes ``bench_results/bench_monitoring.{json,md}`` (``--up-only``: ``bench_monitoring_up.{json,md}``).

    python scripts/bench_monitoring.py [--sweeps 60] [--heals 3] [--consecutive 3] [--baseline-heals 1] [--window 60]
                                       [--up-rounds 3] [--up-only] [--automation-baseline]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone
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
    """``prefect server start`` with the tuning ``orch up`` gives its server."""
    from orch.stack.up import PREFECT_TUNING

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = open(home / "prefect-server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                "--analytics-off", "--no-ui"],
                               env={**env, **PREFECT_TUNING, "PREFECT_HOME": str(home / "prefect")},
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
    from orch.monitoring import samples, target_checks, targets

    found: list[Any] = [lambda: samples.collect_system(settings),
                        lambda: samples.collect_api(settings, settings.monitoring.interval),
                        lambda: samples.collect_queue(settings), lambda: samples.collect_locks(settings),
                        lambda: samples.collect_database(settings), lambda: samples.collect_prefect(settings)]
    for target in targets.configured_targets(settings):
        found.append(lambda target=target: [target_checks.check_health(settings, target)])
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


def cpu_of(process: subprocess.Popen[bytes]) -> float:
    """CPU seconds of a process and its descendants (``prefect server start`` may run its server in one)."""
    root = psutil.Process(process.pid)
    total = 0.0
    for each in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a child that just ended
            times = each.cpu_times()
            total += times.user + times.system
    return total


def deploy(name: str, pool: str, env: dict[str, str], *extra: str) -> None:
    """``prefect deploy`` of one ``prefect.yaml`` deployment onto ``pool``, as ``orch up`` applies it."""
    done = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", name, "--pool", pool, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError("prefect deploy failed", (done.stdout + done.stderr).splitlines()[-8:])


def start_worker(argv: list[str], env: dict[str, str], log: Path, api_url: str, pool: str) -> subprocess.Popen[bytes]:
    """A worker process, returned once the server sees it ONLINE in ``pool``."""
    from orch.config.schema import PrefectSettings
    from orch.prefect_api import online_workers

    out = open(log, "wb")  # noqa: SIM115
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while online_workers(PrefectSettings(api_url=api_url), pool) < 1:
        if process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"worker for {pool} did not come online", log_tail(log))
        time.sleep(0.3)
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> float:
    """SIGTERM, as a service manager stops it; seconds until it exited."""
    started = time.monotonic()
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    return round(time.monotonic() - started, 2)


def completed_runs(deployment_id: Any, since: float, until: float) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                                     limit=200)
    return sum(1 for run in runs if run.state and run.state.is_completed() and run.start_time
               and since <= run.start_time.timestamp() <= until)


def sweep_window(settings: Any, worker: subprocess.Popen[bytes], server: subprocess.Popen[bytes],
                 window: float) -> dict[str, Any]:
    """Scheduled sweeps in ORCH's worker process (the production path): the host's sweep deployment, which
    the worker registers as it starts (orch/monitoring/hosts.py ``ensure_host``); CPU of the worker and of
    the Prefect server over ``window`` s of sweeps every INTERVAL s."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from orch.monitoring.hosts import SWEEP_FLOW, sweep_deployment

    name = f"{SWEEP_FLOW}/{sweep_deployment(settings.monitoring.host_name)}"

    def deployed() -> Any:
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
            return client.read_deployment_by_name(name).id
        return None

    deployment_id = wait_for(deployed, 60, f"{name} registered by the worker", every=0.5)
    deadline = time.monotonic() + 60
    while completed_runs(deployment_id, 0, time.time()) == 0:
        if time.monotonic() > deadline:
            raise BenchError("no scheduled sweep completed in the worker within 60 s")
        time.sleep(0.5)
    since, cpu, server_cpu = time.time(), cpu_of(worker), cpu_of(server)
    time.sleep(window)
    until = time.time()
    sweeps = completed_runs(deployment_id, since - INTERVAL, until)
    if sweeps == 0:
        raise BenchError("no scheduled sweep completed in the measuring window")
    return {"deployment_id": deployment_id, "seconds": until - since, "sweeps": sweeps,
            "worker_cpu": cpu_of(worker) - cpu, "server_cpu": cpu_of(server) - server_cpu}


def per_sweep(window: dict[str, Any], worker: subprocess.Popen[bytes],
              server: subprocess.Popen[bytes]) -> dict[str, float]:
    """Pause the schedule, measure both processes idle for 30 s (the same deployments, the same worker:
    polls, heartbeats, the event subscription), and charge each sweep only what is beyond idle."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.pause_deployment(window["deployment_id"])
    time.sleep(INTERVAL)  # the last sweep ends
    idle_seconds = 30.0
    cpu, server_cpu = cpu_of(worker), cpu_of(server)
    time.sleep(idle_seconds)
    idle = (cpu_of(worker) - cpu) / idle_seconds
    server_idle = (cpu_of(server) - server_cpu) / idle_seconds
    sweeps, seconds = window["sweeps"], window["seconds"]
    return {"sweeps": sweeps, "window_s": round(seconds, 1),
            "cpu_per_sweep_ms": round((window["worker_cpu"] - idle * seconds) / sweeps * 1000, 1),
            "worker_idle_cpu_percent": round(idle * 100, 2),
            "server_cpu_per_sweep_ms": round((window["server_cpu"] - server_idle * seconds) / sweeps * 1000, 1),
            "server_idle_cpu_percent": round(server_idle * 100, 2)}


def alert_state(settings: Any) -> str | None:
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import Alert

    with session_scope(settings.database) as session:
        return session.scalar(select(Alert.state).where(Alert.target == "web", Alert.alert_name == "target_down"))


def fired_at(settings: Any) -> float:
    """When the newest ``target_down`` firing of ``web`` was recorded (by whichever process swept)."""
    from sqlalchemy import select

    from orch.storage.engine import session_scope
    from orch.storage.models import AlertEvent

    with session_scope(settings.database) as session:
        stamp = session.scalar(select(AlertEvent.timestamp).where(
            AlertEvent.target == "web", AlertEvent.state == "firing").order_by(AlertEvent.id.desc()).limit(1))
    if stamp is None:
        raise BenchError("the target was healed but no firing was recorded")
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def heal_times(settings: Any, service: Service, rounds: int, sweep: Any = None) -> list[dict[str, float]]:
    """Kill the target at a random point of the interval; wall-clock times (every process on one host):
    detection (kill -> the firing is recorded), decision (-> the sweep creates the self-heal run on the host's
    queue -> the worker starts it), action (-> healthy).

    ``sweep``: None when the schedule sweeps (in the worker, as in production); else a callable this
    process calls every INTERVAL s until the alert fires (the baseline, as the previous bench did).
    """
    from prefect.client.orchestration import get_client

    from orch.monitoring.healing import list_runs
    from orch.monitoring.hosts import host_queue

    chance = random.Random(5)
    results = []
    for _ in range(rounds):
        deadline = time.monotonic() + 6 * INTERVAL + 30
        while alert_state(settings) == "firing" or not service.healthy():
            if time.monotonic() > deadline:
                raise BenchError("the previous round's alert never resolved")
            if sweep is not None:
                sweep()
            time.sleep(0.5)
        time.sleep(chance.uniform(0, INTERVAL))
        service.kill()
        killed = time.time()
        next_sweep = time.monotonic() + (chance.uniform(0, INTERVAL) if sweep is not None else 0)
        swept = sweep is None
        while not (swept and service.healthy()):
            if time.time() - killed > 180:
                raise BenchError("target not healed within 180 s")
            if not swept and time.monotonic() >= next_sweep:
                swept = "firing:target_down@web" in sweep()["notices"]
                next_sweep += INTERVAL
            time.sleep(0.05)
        healed = time.time()
        fired = fired_at(settings)
        run = list_runs(settings, "web")[0]
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(run["flow_run_id"]))
        started = min(max(flow_run.start_time.timestamp(), fired), healed) if flow_run.start_time else fired
        created = min(max(flow_run.created.timestamp(), fired), started) if flow_run.created else fired
        results.append({"detection_s": round(fired - killed, 2), "decision_s": round(started - fired, 2),
                        "run_created_s": round(created - fired, 2), "run_start_s": round(started - created, 2),
                        "action_s": round(healed - started, 2), "total_s": round(healed - killed, 2),
                        "in_process": (flow_run.infrastructure_pid or "").startswith("orch-inprocess:"),
                        "on_host_queue": flow_run.work_queue_name == host_queue(settings.monitoring.host_name)})
        if sweep is not None:
            time.sleep(1)
            sweep()  # resolves the alert before the next round
    return results


def consecutive_heals(settings: Any, service: Service, rounds: int) -> list[dict[str, Any]]:
    """Kill the target again as soon as each heal has brought it back, ``rounds`` times in a row: no sweep
    sees it well in between, so its alert is still firing at each kill (issue 15: the second failure was
    never healed). Wall-clock time from each kill to healthy again, and the heal count the alert records."""
    from orch.monitoring.alerts import list_alerts
    from orch.monitoring.healing import list_runs

    chance = random.Random(7)
    results = []
    service.wait(True, 60)
    for _ in range(rounds):
        before = {run["id"] for run in list_runs(settings, "web")}
        firing = alert_state(settings) == "firing"
        time.sleep(chance.uniform(0, INTERVAL))
        service.kill()
        killed = time.time()
        deadline = killed + 180
        while True:
            runs = [run for run in list_runs(settings, "web") if run["id"] not in before]
            if any(run["outcome"] == "healed" for run in runs) and service.healthy():
                break
            if time.time() > deadline:
                raise BenchError(f"a consecutive failure was not healed within 180 s (new runs: {runs})")
            time.sleep(0.05)
        healed = time.time()
        alert = next(a for a in list_alerts(settings) if a["alert_name"] == "target_down" and a["target"] == "web")
        results.append({"total_s": round(healed - killed, 2), "firing_when_killed": firing,
                        "heals_recorded": alert["heals"]})
    return results


# --- the user's path: a fresh `orch up` -------------------------------------------------------------------

SWEEP_FLOW = "monitor-sweep"


class UpStack:
    """``orch up`` in an ORCH_HOME of its own, started as an operator starts it; Prefect read over REST."""

    def __init__(self, home: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "orch.yaml").write_text(yaml.safe_dump(config))
        self.home, self.prefect_port, self.api_port = home, free_port(), free_port()
        self.env = {**env, "ORCH_HOME": str(home), "ORCH_CONFIG_PATH": str(home / "orch.yaml"),
                    "PREFECT_SERVER_API_PORT": str(self.prefect_port), "ORCH_PORT": str(self.api_port)}
        self.api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.headers: dict[str, str] = {}
        self.auth = ""

    def start(self, timeout: float = 240) -> float:
        """Start it; the wall-clock time it said it is up."""
        import threading

        self.process = subprocess.Popen([str(BIN / "orch"), "up"], cwd=self.home, env=self.env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            self.lines.extend(self.process.stdout)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not any("is up in" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError("orch up did not come up", self.lines[-8:])
            time.sleep(0.1)
        from orch.config.schema import PrefectSettings
        from orch.prefect_api import prefect_headers

        self.auth = json.loads((self.home / "data" / "secrets.json").read_text())["prefect_auth_string"]
        self.headers = prefect_headers(PrefectSettings(auth_string=self.auth))
        return time.time()

    def settings(self) -> Any:
        from orch.config.loader import load_settings

        return load_settings(environ={k: self.env[k] for k in ("ORCH_HOME", "ORCH_CONFIG_PATH")},
                             generate_secrets=False)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; a 503 (Prefect's SQLite busy on a loaded machine) is asked again."""
        for delay in (0.5, 1, 2, 4, 0):
            answer = httpx.request(method, f"{self.api}{path}", json=body, headers=self.headers, timeout=20)
            if answer.status_code != 503 or not delay:
                break
            time.sleep(delay)
        if answer.status_code >= 400:
            raise BenchError(f"Prefect answered {answer.status_code} to {method} {path}", [answer.text[:300]])
        return answer.json() if answer.content else None

    def flow_runs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.call("POST", "/flow_runs/filter", {"limit": 200, **body}))

    def sweeps(self) -> list[dict[str, Any]]:
        return self.flow_runs({"flows": {"name": {"any_": [SWEEP_FLOW]}}, "sort": "EXPECTED_START_TIME_ASC"})

    def pid(self, component: str) -> int:
        return int((self.home / "data" / "logs" / f"{component}.pid").read_text())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def stamp(value: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp() if value else None


def up_heals(stack: UpStack, service: Service, rounds: int, with_baseline: bool = False) -> dict[str, Any]:
    """On a fresh stack: two healthy sweeps, then the target killed at a random point of the interval and
    killed again as soon as each heal has brought it back (``rounds`` failures in a row). Each hop on the
    wall clock: kill -> the sweep that sees it starts (the schedule) -> it emits ``orch.alert.firing`` -> it
    creates the heal run on the host's queue -> the worker starts it -> healthy. With ``with_baseline`` the
    automation of :func:`automation_baseline` reacts to the same events meanwhile; its run creation then
    competes with the sweep's for the Prefect server's SQLite database, which the two paths never did in
    production, so neither figure is then the path alone: a diagnostic, off by default."""
    from orch.monitoring.healing import list_runs
    from orch.monitoring.hosts import host_queue

    settings = stack.settings()
    up_at = stack.start()
    first = wait_for(lambda: next((r for r in stack.sweeps() if r["start_time"]), None), 120, "a first sweep")
    wait_for(lambda: sum(1 for r in stack.sweeps() if r["state"]["type"] == "COMPLETED") >= 2, 60,
             "two healthy sweeps")
    baseline = automation_baseline(stack) if with_baseline else None
    chance = random.Random(15)
    results = []
    try:
        for _ in range(rounds):
            service.wait(True, 60)
            before = {run["id"] for run in list_runs(settings, "web")}
            time.sleep(chance.uniform(0, INTERVAL))
            service.kill()
            killed = time.time()

            def healed_run(before: set[int] = before) -> dict[str, Any] | None:
                runs = [run for run in list_runs(settings, "web") if run["id"] not in before]
                done = next((run for run in runs if run["outcome"] == "healed"), None)
                return done if done and service.healthy() else None

            run = wait_for(healed_run, 180, "the target to be healed")
            healthy = time.time()
            heal = stack.call("GET", f"/flow_runs/{run['flow_run_id']}")
            created, started = stamp(heal["created"]), stamp(heal["start_time"]) or healthy
            seen = [r for r in stack.sweeps() if r["start_time"] and killed < stamp(r["start_time"]) < created]
            sweep = seen[0] if seen else None
            swept = stamp(sweep["start_time"]) if sweep else killed
            results.append({
                "killed_at": killed, "swept_at": swept, "sweep_id": sweep["id"] if sweep else None,
                "heal_created_at": created,
                "heal_queue": heal.get("work_queue_name"),
                "on_host_queue": heal.get("work_queue_name") == host_queue(settings.monitoring.host_name),
                "kill_to_sweep_s": round(swept - killed, 2),
                "sweep_late_s": round(swept - stamp(sweep["expected_start_time"]), 2) if sweep else None,
                "sweep_to_heal_created_s": round(created - swept, 2),
                "heal_created_to_started_s": round(started - created, 2),
                "heal_started_to_healthy_s": round(healthy - started, 2),
                "total_s": round(healthy - killed, 2)})
        firing_hops(stack, results, baseline)
    finally:
        if baseline:
            stack.call("DELETE", f"/automations/{baseline['automation_id']}")
            stack.call("DELETE", f"/deployments/{baseline['deployment_id']}")
    return {"first_sweep_after_up_s": round(stamp(first["start_time"]) - up_at, 2), "heals": results,
            **({"automation_baseline": True} if baseline else {})}


FIRING_EVENT = "orch.alert.firing"


def automation_baseline(stack: UpStack) -> dict[str, str]:
    """The previous path beside the current one: an automation like the retired ``orch-alert-firing`` (a reactive
    trigger on ``orch.alert.firing`` about ``orch.target.*``, a ``RunDeployment`` action), aimed at a copy of
    ``self-heal/auto`` on a pool nobody serves, so its runs are created (what is timed) and never executed."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    pool, suffix = f"bench-unserved-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    stack.call("POST", "/work_pools/", {"name": pool, "type": "process"})
    flow = stack.call("POST", "/flows/filter", {"flows": {"name": {"any_": ["self-heal"]}}})[0]
    deployment = stack.call("POST", "/deployments/", {"name": f"bench-automation-{suffix}", "flow_id": flow["id"],
                                                      "work_pool_name": pool})
    automation = AutomationCore(
        name=f"bench-alert-firing-{suffix}", description="The retired orch-alert-firing path, timed only.",
        trigger=EventTrigger(expect={FIRING_EVENT}, match={"prefect.resource.id": "orch.target.*"},
                             posture=Posture.Reactive, threshold=1, within=0),
        actions=[RunDeployment(source="selected", deployment_id=deployment["id"],
                               parameters={"target": "{{ event.resource.name }}"})])
    created = stack.call("POST", "/automations/", automation.model_dump(mode="json"))
    return {"automation_id": created["id"], "deployment_id": deployment["id"]}


def firing_hops(stack: UpStack, results: list[dict[str, Any]], baseline: dict[str, str] | None) -> None:
    """Split each "sweep -> heal run created" hop at the ``orch.alert.firing`` event the sweep emits just
    before it creates the run (and, with ``baseline``, time that automation's run from the same event), and
    read the sweep's task runs. Prefect persists events in batches, so they are read once the rounds are over."""
    from datetime import datetime

    since = datetime.fromtimestamp(min(r["killed_at"] for r in results) - 1, timezone.utc).isoformat()

    def events() -> list[float]:
        found = stack.call("POST", "/events/filter", {"filter": {"occurred": {"since": since}, "event": {
            "name": [FIRING_EVENT]}, "order": "ASC"}, "limit": 50})
        return [stamp(e["occurred"]) for e in found["events"]]

    def automation_runs() -> list[float]:
        if baseline is None:
            return []
        found = stack.flow_runs({"deployments": {"id": {"any_": [baseline["deployment_id"]]}}})
        return sorted(stamp(r["created"]) for r in found)

    wanted = len(results) if baseline else 0
    with contextlib.suppress(BenchError):  # a missing figure is reported as such, the rest still counts
        wait_for(lambda: len(events()) >= len(results) and len(automation_runs()) >= wanted, 30,
                 "firing events and the baseline automation's runs", every=1)
    emitted, by_automation = events(), automation_runs()
    for result in results:
        fired = next((t for t in emitted if result["killed_at"] < t <= result["heal_created_at"]), None)
        baseline_run = next((t for t in by_automation if fired and t > fired), None)
        result["sweep_to_firing_s"] = round(fired - result["swept_at"], 2) if fired else None
        result["firing_to_heal_created_s"] = round(result["heal_created_at"] - fired, 2) if fired else None
        result["baseline_firing_to_automation_run_s"] = round(baseline_run - fired, 2) if baseline_run else None
        result["sweep_tasks_s"] = sweep_tasks(stack, result["sweep_id"], result["swept_at"]) if fired else None


def sweep_tasks(stack: UpStack, sweep_id: str | None, swept: float) -> dict[str, list[float | None]] | None:
    """The sweep's task runs as ``name: [start, end]`` in seconds after the sweep started: where its
    "sweep -> heal run created" time goes."""
    if not sweep_id:
        return None
    found = stack.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [sweep_id]}}, "limit": 50})
    return {run["name"]: [round(stamp(run["start_time"]) - swept, 2) if run["start_time"] else None,
                          round(stamp(run["end_time"]) - swept, 2) if run["end_time"] else None]
            for run in sorted(found, key=lambda r: r["start_time"] or "")}


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} within {timeout:.0f} s")
        time.sleep(every)


def zombie_clearance(stack: UpStack) -> dict[str, Any]:
    """SIGKILL the worker (its ``dispatch`` run and any in-process run stay Running in Prefect: nothing of
    it reports), then the time until none of the runs it was executing is Running any more (orch up
    restarts the worker, whose next sweep crashes them, orch/monitoring/zombies.py), and until the
    restarted worker is online again."""
    import socket

    pid = stack.pid("worker")
    executor = f"{socket.gethostname()}:{pid}:"
    running = wait_for(lambda: [r for r in stack.flow_runs({"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}})
                                if str((r.get("labels") or {}).get("orch.executor", "")).startswith(executor)],
                       60, "a Running run of the worker")
    ids = [r["id"] for r in running]
    os.kill(pid, signal.SIGKILL)
    killed = time.time()

    def cleared() -> bool:
        flows = stack.flow_runs({"flow_runs": {"id": {"any_": ids}, "state": {"type": {"any_": ["RUNNING"]}}}})
        tasks = stack.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}, "task_runs": {
            "state": {"type": {"any_": ["RUNNING", "PENDING"]}}}, "limit": 200})
        return not flows and not tasks

    def polling() -> float | None:
        """When the restarted worker has polled the in-process pool (the dead one counts ONLINE for a while)."""
        if stack.pid("worker") == pid:
            return None
        workers = stack.call("POST", "/work_pools/orch-inprocess/workers/filter", {})
        beats = [stamp(w["last_heartbeat_time"]) for w in workers if w.get("last_heartbeat_time")]
        return max(beats) if beats and max(beats) > killed + 1 else None

    clear = wait_for(lambda: cleared() and time.time(), 120, "the killed worker's runs to leave Running", every=0.25)
    online = wait_for(polling, 120, "the restarted worker polling", every=0.25)
    # The baseline: the sweep alone (before the restarted worker crashed them at its start), i.e. the end of
    # the first sweep the restarted worker ran.
    swept = wait_for(lambda: next((stamp(r["end_time"]) for r in stack.sweeps() if r["end_time"] and r["start_time"]
                                   and stamp(r["start_time"]) > killed), None), 120, "a sweep after the restart")
    return {"zombie_runs": len(ids), "worker_polling_again_s": round(online - killed, 2),
            "no_zombie_left_s": round(clear - killed, 2), "first_sweep_after_kill_ended_s": round(swept - killed, 2)}


def schedule_paths(stack: UpStack) -> dict[str, float]:
    """The cause of the slow first heal, measured on the stack's own Prefect server: how long after the sweep
    is deployed Prefect has runs every INTERVAL s. ``orch up`` now deploys the configured interval
    (deployments/apply.py); the baseline is the previous path, ``prefect.yaml``'s 60 s deployed, then the
    schedule corrected once Prefect's scheduler has created runs from the 60 s (it does within its 5 s loop
    for recently updated deployments). Copies of the sweep deployment on a pool nobody serves: nothing runs."""
    from deployments.apply import SWEEP_ENTRYPOINT, apply_deployments, deployment_spec

    spec = deployment_spec(stack.settings())
    sweep = next(d for d in spec["deployments"] if d["entrypoint"] == SWEEP_ENTRYPOINT)
    pool = f"bench-unserved-{uuid.uuid4().hex[:6]}"
    stack.call("POST", "/work_pools/", {"name": pool, "type": "process"})
    saved = {key: os.environ.get(key) for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING")}
    os.environ.update(PREFECT_API_URL=stack.api, PREFECT_API_AUTH_STRING=stack.auth)
    found: dict[str, float] = {}
    try:
        for path, interval in (("deployed_at_interval", INTERVAL), ("corrected_after_deploy", 60)):
            name = f"bench-{path}-{uuid.uuid4().hex[:6]}"
            schedules = [{**entry, "interval": interval} for entry in sweep["schedules"]]
            apply_deployments({**spec, "deployments": [{**sweep, "name": name, "schedules": schedules,
                                                        "work_pool": {"name": pool}}]})
            deployed = time.time()
            deployment = stack.call("POST", "/deployments/filter", {"deployments": {"name": {"any_": [name]}}})[0]

            def runs(deployment_id: str = deployment["id"]) -> list[float]:
                found = stack.flow_runs({"deployments": {"id": {"any_": [deployment_id]}},
                                         "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
                                         "sort": "EXPECTED_START_TIME_ASC"})
                return [stamp(r["expected_start_time"]) for r in found if stamp(r["expected_start_time"]) > time.time()]

            if interval != INTERVAL:  # the old path: Prefect schedules the 60 s, then apply corrected it
                wait_for(runs, 60, "runs of the deployed 60 s schedule", every=0.2)
                entry = stack.call("GET", f"/deployments/{deployment['id']}")["schedules"][0]
                stack.call("PATCH", f"/deployments/{deployment['id']}/schedules/{entry['id']}", {"schedule": {
                    "interval": INTERVAL, "anchor_date": entry["schedule"]["anchor_date"], "timezone": "UTC"}})
                deployed = time.time()

            def at_interval() -> bool:
                starts = runs()
                return len(starts) >= 2 and round(starts[1] - starts[0], 3) == INTERVAL

            wait_for(at_interval, 150, f"runs every {INTERVAL} s ({path})", every=0.2)
            found[f"{path}_s"] = round(time.time() - deployed, 2)
            stack.call("DELETE", f"/deployments/{deployment['id']}")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return found


def up_phase(env: dict[str, str], rounds: int, with_baseline: bool = False) -> dict[str, Any]:
    """The heals, the zombie clearance and the schedule paths on one fresh ``orch up`` stack at INTERVAL s."""
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp:
        home = Path(tmp)
        service = Service(home / "svc")
        service.start()
        slack_port = free_port()
        config = {"monitoring": {"interval": INTERVAL,
                                 "alerting": {"flap_threshold": 100},  # the kill rounds are not flapping
                                 "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100},
                                 "self_healing": {"max_runs_per_hour": 100, "backoff_seconds": 0.5,
                                                  "settle_seconds": 10},
                                 "targets": [{"name": "web", "health_check": {"url": service.url, "timeout": 2},
                                              "restart": {"command": service.start_command}}]},
                  "notifications": {"slack": {"webhook_url": f"http://127.0.0.1:{slack_port}/slack"}}}
        stack = UpStack(home / "orch", config, {k: v for k, v in env.items()
                                                 if not k.startswith(("PREFECT_", "ORCH_"))})
        try:
            heals = up_heals(stack, service, rounds, with_baseline)
            print(json.dumps(heals), flush=True)  # what is measured so far, should a later step fail
            zombies = zombie_clearance(stack)
            print(json.dumps(zombies), flush=True)
            paths = schedule_paths(stack)
        finally:
            stack.stop()
            service.stop()
    return {**heals, "zombies": zombies, "schedule": paths}


def up_report(up: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
    """Markdown rows and goals of :func:`up_phase`."""
    rows = [f"| fresh `orch up`: first sweep after it said it is up (s; negative: before, the worker registers it) | "
            f"{up['first_sweep_after_up_s']} | – |"]
    for n, heal in enumerate(up["heals"], 1):
        rows.append(f"| fresh `orch up`, failure #{n} ({INTERVAL} s interval): kill → sweep (late by) / → firing "
                    f"emitted / → heal run created by the sweep / → started / → healthy = total (s) | "
                    f"{heal['kill_to_sweep_s']} ({heal['sweep_late_s']}) / {heal.get('sweep_to_firing_s')} / "
                    f"{heal.get('firing_to_heal_created_s')} / {heal['heal_created_to_started_s']} / "
                    f"{heal['heal_started_to_healthy_s']} = {heal['total_s']} | – |")
        if "automation_baseline" in up:
            rows.append(f"| … firing emitted → heal run created (baseline: by an `orch-alert-firing`-like automation, "
                        f"same events, competing) (s) | {heal.get('firing_to_heal_created_s')} | "
                        f"{heal.get('baseline_firing_to_automation_run_s') or '–'} |")
        request = next((span for name, span in (heal.get("sweep_tasks_s") or {}).items()
                        if name.startswith("request-heal") and None not in span), None)
        if request:
            rows.append(f"| … the sweep's `request-heal` task, start → end (s after the sweep started) | "
                        f"{request[0]} → {request[1]} | – |")
    schedule, zombies = up["schedule"], up["zombies"]
    rows.append(f"| sweep runs every {INTERVAL} s exist after the deploy (baseline: after the old post-deploy "
                f"correction) (s) | {schedule['deployed_at_interval_s']} | {schedule['corrected_after_deploy_s']} |")
    rows.append(f"| worker SIGKILL → no zombie run left ({zombies['zombie_runs']} Running) / restarted worker polling "
                f"(s) (baseline: the first sweep after the kill ended) | {zombies['no_zombie_left_s']} / "
                f"{zombies['worker_polling_again_s']} | {zombies['first_sweep_after_kill_ended_s']} |")
    goals = {f"up_heal_{n}_within_interval_restart_3s": h["total_s"] <= INTERVAL + h["heal_started_to_healthy_s"] + 3
             for n, h in enumerate(up["heals"], 1)}
    goals["up_every_heal_on_the_host_queue"] = all(h["on_host_queue"] for h in up["heals"])
    goals["up_no_zombie_within_2_intervals"] = zombies["no_zombie_left_s"] <= 2 * INTERVAL
    return rows, goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=60, help="collections measured (and naive: a tenth)")
    parser.add_argument("--heals", type=int, default=3, help="kill-and-heal rounds through ORCH's worker")
    parser.add_argument("--baseline-heals", type=int, default=1,
                        help="kill-and-heal rounds the old way (a process per self-heal run)")
    parser.add_argument("--consecutive", type=int, default=3,
                        help="failures in a row, each as soon as the previous heal brought the target back")
    parser.add_argument("--window", type=float, default=60, help="seconds of scheduled sweeps measured for CPU")
    parser.add_argument("--up-rounds", type=int, default=3,
                        help="failures in a row on a fresh `orch up` stack (the user's path); 0 skips that phase")
    parser.add_argument("--up-only", action="store_true",
                        help="only the fresh `orch up` phase; writes bench_results/bench_monitoring_up.{json,md}")
    parser.add_argument("--automation-baseline", action="store_true",
                        help="also run an orch-alert-firing-like automation during the `orch up` heals; its run "
                             "creation then competes with the sweep's for the Prefect server's SQLite database "
                             "(measured: a 503 and Prefect's client retrying after ~2 s, on both paths)")
    args = parser.parse_args(argv)
    env = clean_environ()
    info = machine_info()
    if args.up_only:
        return write_up_only(info, up_phase(env, args.up_rounds, args.automation_baseline))
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        home = Path(tmp)
        server, api_url = start_prefect(home, env)
        service = Service(home / "svc")
        service.start()
        workers: list[subprocess.Popen[bytes]] = []
        try:
            slack_port = free_port()  # nobody listens: notifications fail fast and are logged, as designed
            config = {"database": {"url": f"sqlite:///{home}/orch.db"}, "data_dir": str(home / "data"),
                      "logging": {"file": None}, "api": {"port": free_port()}, "prefect": {"api_url": api_url},
                      "monitoring": {"interval": INTERVAL, "orch_targets": False,
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
            from orch.stack.up import child_environment
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

            # Production: the worker process as `orch up` starts it (its environment, Prefect's INFO logging),
            # serving the in-process pool and registering this host's sweep on its queue; the sweep creates
            # each heal run on that queue, and both run in that process.
            pool, process_pool = f"bench-inprocess-{uuid.uuid4().hex[:6]}", f"bench-process-{uuid.uuid4().hex[:6]}"
            ensure_work_pools([pool, process_pool], inprocess=[pool])
            register_blocks(settings)
            deploy("self-heal/auto", pool, env)
            worker_env = child_environment(settings, str(home / "orch.yaml"))
            worker_env.pop("PREFECT_LOGGING_LEVEL", None)
            worker = start_worker([sys.executable, "-m", "orch.stack.worker", "--no-process", "--inprocess-pool", pool,
                                   "--name", "bench", "--no-dispatcher", "--sweep"], worker_env,
                                  home / "orch-worker.log", api_url, pool)
            workers.append(worker)
            window = sweep_window(settings, worker, server, args.window)
            heals = heal_times(settings, service, args.heals)
            consecutive = consecutive_heals(settings, service, args.consecutive)
            scheduled = per_sweep(window, worker, server)
            worker_stop_s = stop_worker(worker)

            # Baseline: the previous path, a process worker starting every self-heal run as a new process.
            baseline: list[dict[str, float]] = []
            if args.baseline_heals:
                deploy("self-heal/auto", process_pool, env)
                workers.append(start_worker([str(BIN / "prefect"), "worker", "start", "--pool", process_pool, "--type",
                                             "process"], worker_env, home / "process-worker.log", api_url,
                                            process_pool))
                baseline = heal_times(settings, service, args.baseline_heals, sweep=monitor_sweep)

            history = fill_history(settings, days=7, tasks=20000)
            scrape = scrape_times(settings)
        finally:
            for running in workers:
                if running.poll() is None:
                    stop_worker(running)
            service.stop()
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()

    # After the stack above is down: a whole `orch up` of its own, as an operator starts it.
    up = up_phase(clean_environ(), args.up_rounds, args.automation_baseline) if args.up_rounds else None
    core_share_process = process["cpu_median_s"] / 60 * 100
    core_share_worker = scheduled["cpu_per_sweep_ms"] / 1000 / 60 * 100
    worst = max(heals, key=lambda h: h["total_s"])
    restart = max(h["action_s"] for h in heals)
    report = {"machine": info, "collection": ours, "collection_sequential": sequential, "naive_collection": naive,
              "sweep_flow_in_process": in_flow, "sweep_flow_process": process, "sweep_scheduled_in_worker": scheduled,
              "scrape": scrape, "history": history, "heals": heals, "consecutive_heals": consecutive,
              "baseline_heals": baseline,
              "worker_stop_s": worker_stop_s, "interval_s": INTERVAL, "orch_up": up,
              "goals": {
                  "collection_p95_under_50ms": ours["wall_p95_ms"] < 50,
                  "sweep_under_1pct_core_as_scheduled_in_worker": core_share_worker < 1,
                  "heal_within_interval_restart_3s": worst["total_s"] <= INTERVAL + restart + 3,
                  "consecutive_heals_within_interval_restart_3s": all(
                      h["total_s"] <= INTERVAL + restart + 3 for h in consecutive),
                  "every_heal_ran_in_process": all(h["in_process"] for h in heals),
                  "every_heal_on_the_host_queue": all(h["on_host_queue"] for h in heals)}}
    up_rows, up_goals = up_report(up) if up else ([], {})
    report["goals"].update(up_goals)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_monitoring.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        "| figure | ORCH | baseline |", "|---|---|---|",
        (f"| collection wall p50 / p95 (ms), concurrent as in the flow (baseline: naive script) | "
         f"{ours['wall_p50_ms']} / {ours['wall_p95_ms']} | {naive['wall_p50_ms']} / {naive['wall_p95_ms']} |"),
        (f"| collection wall p50 / p95 (ms), one after the other | {sequential['wall_p50_ms']} / "
         f"{sequential['wall_p95_ms']} | – |"),
        f"| collection CPU per sweep, mean (ms) | {ours['cpu_mean_ms']} | {naive['cpu_mean_ms']} |",
        (f"| monitor-sweep flow called in this process: wall p50 / p95 (ms), CPU mean (ms) | "
         f"{in_flow['wall_p50_ms']} / {in_flow['wall_p95_ms']}, {in_flow['cpu_mean_ms']} | – |"),
        (f"| scheduled sweep, worker CPU per sweep (ms) (baseline: a fresh process per run, CPU s) | "
         f"{scheduled['cpu_per_sweep_ms']} ({scheduled['sweeps']} sweeps in {scheduled['window_s']} s) | "
         f"{process['cpu_median_s']} s (wall {process['wall_median_s']} s) |"),
        (f"| share of one core at the 60 s default, per sweep: scheduled in the worker / fresh process | "
         f"{core_share_worker:.2f} % | {core_share_process:.2f} % |"),
        (f"| worker idle CPU with the in-process pool (polls, heartbeats, event subscription) | "
         f"{scheduled['worker_idle_cpu_percent']:.2f} % of a core | – |"),
        (f"| Prefect server CPU per scheduled sweep (ms); server idle | {scheduled['server_cpu_per_sweep_ms']}; "
         f"{scheduled['server_idle_cpu_percent']:.2f} % | – |"),
        (f"| /metrics domain scrape p50 / p95 (ms), {history['samples']:,} samples, {history['tasks']:,} tasks | "
         f"{scrape['p50_ms']} / {scrape['p95_ms']} | – |"),
        f"| worker stop on SIGTERM (s) | {worker_stop_s} | – |",
    ]
    def heal_row(heal: dict[str, float]) -> str:
        return (f"{heal['detection_s']} / {heal['decision_s']} ({heal['run_created_s']} + {heal['run_start_s']}) / "
                f"{heal['action_s']} = {heal['total_s']}")

    for n, heal in enumerate(heals, 1):
        rows.append(f"| heal #{n} ({INTERVAL} s interval): detection / decision (sweep creates the run + run start) "
                    f"/ action = total (s) | {heal_row(heal)} | – |")
    for n, heal in enumerate(consecutive, 1):
        rows.append(f"| failure #{n} in a row (killed as soon as healed; alert "
                    f"{'still firing' if heal['firing_when_killed'] else 'not firing'}): kill → healthy (s); "
                    f"heals the alert counts | {heal['total_s']}; {heal['heals_recorded']} | – |")
    for n, heal in enumerate(baseline, 1):
        rows.append(f"| baseline heal #{n} (a process per self-heal run): same split | – | {heal_row(heal)} |")
    rows += up_rows
    goals = [f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in report["goals"].items()]
    header = (f"{info['cpu_count']} CPUs, Python {info['python']}, Prefect {info['prefect']}, {info['timestamp']}, "
              f"load average at start {info['load_avg_1m']}, at end {os.getloadavg()[0]:.2f}.")
    (RESULTS / "bench_monitoring.md").write_text("\n".join([header, "", *rows, "", *goals]) + "\n")
    print("\n".join([header, "", *rows, "", *goals]))
    return 0


def write_up_only(info: dict[str, Any], up: dict[str, Any]) -> int:
    rows, goals = up_report(up)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_monitoring_up.json").write_text(json.dumps({"machine": info, "interval_s": INTERVAL,
                                                                  "orch_up": up, "goals": goals}, indent=2) + "\n")
    header = (f"{info['cpu_count']} CPUs, Python {info['python']}, Prefect {info['prefect']}, {info['timestamp']}, "
              f"load average at start {info['load_avg_1m']}, at end {os.getloadavg()[0]:.2f}.")
    text = "\n".join([header, "", "| figure | ORCH | baseline |", "|---|---|---|", *rows, "",
                      *[f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in goals.items()]]) + "\n"
    (RESULTS / "bench_monitoring_up.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
