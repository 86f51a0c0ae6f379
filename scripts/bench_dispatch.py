"""Dispatch benchmark: ORCH's queue and dispatcher against the two ways Prefect runs work on its own.

Why it exists: ORCH promises to accept dispatches fast (≥ 1,000/s one at a time, ≥ 10,000/s in
batches), to start a task quickly when idle (p50 ≤ 250 ms from submit to start), to run ≥ 100 no-op
tasks/s end to end, and to be far ahead (≥ 30×) of the naive Prefect way, one deployment run per task.
Those promises are only worth something measured the way they are met in production: a fresh SQLite
ORCH database, a real Prefect server (with the task-run recorder batching ``orch up`` gives its own
server), the real dispatcher service process, and timestamps read back from the queue of record.

In one invocation, side by side:

(a) ORCH: accept rate without a dispatcher (single ``enqueue`` and ``enqueue_many`` in batches of 500,
    each dispatch validated first); with one ``python -m orch.dispatch.service`` running, submit→start
    latency at idle (tasks spaced ~100 ms apart), then a burst of no-op tasks (end-to-end tasks/s and
    latencies under load), and Prefect's recording lag: from the last ORCH task finished until the
    Prefect server reports all of their task runs final.
(b) the naive Prefect way: a no-op flow deployed to a process work pool, a process worker polling every
    2 s, one ``run_deployment`` per task.
(c) Prefect background tasks: a ``@task`` served by ``prefect task serve``, ``.delay()`` per task.
(d) the user's path (issue 17), measured first: a real ``orch up`` on SQLite and on PostgreSQL (a
    throwaway database on 127.0.0.1:5432), an admin made with ``orch user create-admin`` and its bearer
    token on 32 keep-alive connections; single ``POST /dispatch`` of no-op tasks while the dispatcher runs,
    run to the end (accepted/s, end-to-end tasks/s read back through ``GET /tasks``, CPU-seconds per task
    of the API, the worker with its dispatcher and the Prefect server), then ``POST /dispatch/batch`` of
    100 (accepted tasks/s). (a)-(c) are the ceiling beside it.
(e) the peer baseline: Celery with Redis (db 15 of 127.0.0.1:6379, emptied first), one worker with a no-op
    task, 32 threads calling ``.delay()``: accepted/s and end-to-end tasks/s.

Usage: ``.venv/bin/python scripts/bench_dispatch.py [--quick] [--runs N] [--out DIR] [--parts all|user-path]
[--databases sqlite,postgresql] [--tree DIR] [--cores N] [--single N]``. Progress goes to
stderr, the markdown table to stdout and ``<out>/bench_dispatch.md``, every figure to
``<out>/bench_dispatch.json``. ``--quick`` is a smoke run with small counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import httpx
import psutil
from bench_common import BenchError, clean_environ, log_tail, run_bench, spread
from bench_common import machine_info as _machine_info

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the virtualenv's bin: prefect
OWNER = "bench"
POOL = "bench-process"
FLOW_NAME = "bench-noop"
DEPLOYMENT = "noop"
BG_TASK = "bench_bg_noop"
DISPATCH_FLOW = "dispatch"  # the flow ORCH's dispatcher runs its tasks in
FINAL_STATES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
TERMINAL = ("completed", "failed", "timed_out", "cancelled")
SERVER_START_TIMEOUT = 150.0
READY_TIMEOUT = 120.0  # a dispatcher / worker / task worker until its first run completes
LAG_TIMEOUT = 180.0  # Prefect catching up with ORCH after the last task finished
STOP_TIMEOUT = 30.0
POLL_SECONDS = 0.25
WORKER_QUERY_SECONDS = "2"  # the naive worker polls as often as `orch up`'s own worker
GOAL_ACCEPT_SINGLE = 1_000.0
GOAL_ACCEPT_BATCHED = 10_000.0
GOAL_IDLE_P50_MS = 250.0
GOAL_TASKS_PER_S = 100.0
GOAL_RATIO = 30.0
SCENARIOS = {"orch": "ORCH dispatcher", "naive": "naive: `run_deployment` per task",
             "background": "Prefect background tasks (`.delay()`)"}

NOOP_FLOW = '''from prefect import flow


@flow(name="{name}")
def noop() -> None:
    """Does nothing: what is measured is everything around it."""
'''
BG_MODULE = '''from prefect import task


@task(name="{name}")
def {name}(i: int) -> int:
    return i
'''
DEPLOY_SNIPPET = (
    "import sys\n"
    "from prefect import flow\n"
    "flow.from_source(source=sys.argv[1], entrypoint='noop_flow.py:noop').deploy("
    "name=sys.argv[2], work_pool_name=sys.argv[3], print_next_steps=False)\n"
)


@dataclass(frozen=True)
class Sizes:
    single: int  # accept: single enqueues
    batched: int  # accept: dispatches enqueued in batches
    batch: int  # batch size for enqueue_many (accept and burst)
    warmup: int  # no-op tasks run before anything is measured
    idle: int  # idle latency: tasks spaced idle_gap_s apart
    idle_gap_s: float
    burst: int  # under load
    cores: int  # the burst is spread over this many cores (core_concurrency stays at its default, 1)
    load_timeout_s: float  # the burst is cut off (queued rest cancelled) after this long
    naive_runs: int
    bg_tasks: int
    http_single: int  # the user's path: single POST /dispatch by 32 clients, run to the end (and Celery's .delay())
    http_batches: int  # the user's path: POST /dispatch/batch of 100 by 32 clients


DEFAULT = Sizes(single=2_000, batched=10_000, batch=500, warmup=5, idle=50, idle_gap_s=0.1, burst=2_000,
                cores=64, load_timeout_s=240.0, naive_runs=20, bg_tasks=200,
                http_single=1_000, http_batches=96)
QUICK = Sizes(single=500, batched=2_000, batch=500, warmup=3, idle=20, idle_gap_s=0.1, burst=300, cores=64,
              load_timeout_s=90.0, naive_runs=5, bg_tasks=30,
              http_single=300, http_batches=32)


# --- small helpers -------------------------------------------------------------------------------

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_tuning() -> dict[str, str]:
    """What ``orch up`` sets for its own Prefect server (task-run recorder batching), taken from it."""
    from orch.stack.up import PREFECT_TUNING

    return dict(PREFECT_TUNING)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 (linear interpolation), min, max and count."""
    if not values:
        return {"n": 0}
    data = sorted(values)

    def at(fraction: float) -> float:
        position = (len(data) - 1) * fraction
        low = math.floor(position)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (position - low)

    return {"n": len(data), "p50": round(at(0.50), 1), "p95": round(at(0.95), 1), "p99": round(at(0.99), 1),
            "min": round(data[0], 1), "max": round(data[-1], 1)}


def wait_until(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], None] = lambda: None,
               log: Path | None = None, interval: float = POLL_SECONDS) -> float:
    """Poll ``check`` until true; returns the seconds it took. ``alive`` raises when a process died."""
    started = time.monotonic()
    while not check():
        alive()
        if time.monotonic() - started > timeout:
            raise BenchError(f"{what} not reached within {timeout:.0f} s", log_tail(log) if log else ())
        time.sleep(interval)
    return time.monotonic() - started


# --- processes -----------------------------------------------------------------------------------

class Processes:
    """Every process this benchmark starts, each in its own session with its own log; nothing else is
    ever signalled. Descendants (flow runs of the process worker) are remembered and killed too."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.trees: dict[str, list[psutil.Process]] = {}  # by name: the process and every descendant seen
        self.logs: list[IO[bytes]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              nice: int = 0) -> subprocess.Popen[bytes]:
        """``nice``: the CPU priority `orch up` gives the component (orch.stack.priority), set as it sets it."""
        from orch.stack.priority import lower_own_priority

        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - open while the process runs
        self.logs.append(log)
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,  # noqa: PLW1509
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=functools.partial(lower_own_priority, nice) if nice else None)
        self.running[name] = process
        self.trees[name] = [psutil.Process(process.pid)]
        return process

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def alive(self, name: str) -> Callable[[], None]:
        def check() -> None:
            process = self.running[name]
            if process.poll() is not None:
                raise BenchError(f"{name} exited with code {process.returncode}", log_tail(self.log(name)))
        return check

    def _remember_descendants(self, name: str) -> None:
        with contextlib.suppress(psutil.Error):
            self.trees[name].extend(self.trees[name][0].children(recursive=True))

    def stop(self, name: str, sig: int = signal.SIGTERM) -> tuple[int | None, float]:
        """Signal the process (not its group: a flow-run child gets its own session anyway); returns its
        exit code and seconds to exit. SIGKILLs it after STOP_TIMEOUT, and then whatever it started."""
        process = self.running.pop(name)
        self._remember_descendants(name)
        began = time.monotonic()
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        seconds = round(time.monotonic() - began, 2)
        kill_survivors(self.trees[name])
        return process.returncode, seconds

    def stop_all(self) -> None:
        for name in list(self.running):
            with contextlib.suppress(Exception):  # cleanup goes on whatever happened
                self.stop(name)
        kill_survivors([proc for tree in self.trees.values() for proc in tree])
        for log in self.logs:
            log.close()


def kill_survivors(procs: list[psutil.Process]) -> None:
    """SIGKILL those still alive; psutil checks creation times, so a recycled pid is never hit."""
    survivors = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                survivors.append(proc)
        except psutil.Error:
            pass
    for proc in survivors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(survivors, timeout=5)


# --- the Prefect server and its API --------------------------------------------------------------

class Prefect:
    """The Prefect server this run started, and the few API calls the benchmark needs."""

    def __init__(self, home: Path, procs: Processes) -> None:
        self.home = home
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.procs = procs
        self.client = httpx.Client(base_url=self.api, timeout=30)
        self.tuning = server_tuning()
        self.started_s = 0.0

    def client_env(self) -> dict[str, str]:
        """For every Prefect client process (dispatcher, worker, task worker, this one)."""
        return {**clean_environ(), "PREFECT_API_URL": self.api, "PREFECT_HOME": str(self.home)}

    def start(self) -> None:
        env = {**clean_environ(), **self.tuning, "PREFECT_HOME": str(self.home)}
        began = time.monotonic()
        self.procs.spawn("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                            "--port", str(self.port), "--analytics-off", "--no-ui"],
                         env, self.home)
        self.started_s = round(wait_until(self._ready, SERVER_START_TIMEOUT, "Prefect server /api/ready",
                                          self.procs.alive("prefect-server"), self.procs.log("prefect-server"),
                                          interval=0.3), 1)
        say(f"Prefect server ready on port {self.port} in {time.monotonic() - began:.1f} s")

    def _ready(self) -> bool:
        try:
            return self.client.get("/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.client.post(path, json=body)
        if response.status_code >= 400:
            raise BenchError(f"Prefect API {path} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def final_orch_task_runs(self) -> int:
        """Task runs of the ``dispatch`` flow (every ORCH task runs as one) that the server has recorded in
        a final state. Counted by flow, not by tag: ORCH task runs carry no tags (Prefect acquires tag
        concurrency slots for every tagged task run), and this server runs no other ``dispatch`` flow."""
        return int(self.post("/task_runs/count", {"flows": {"name": {"any_": [DISPATCH_FLOW]}}, "task_runs": {
            "state": {"type": {"any_": FINAL_STATES}}}}))

    def flow_runs(self, ids: list[str]) -> list[dict[str, Any]]:
        return self._paged("/flow_runs/filter", "flow_runs", ids)

    def task_runs(self, ids: list[str]) -> list[dict[str, Any]]:
        return self._paged("/task_runs/filter", "task_runs", ids)

    def _paged(self, path: str, key: str, ids: list[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 200):
            found.extend(self.post(path, {key: {"id": {"any_": ids[start:start + 200]}}, "limit": 200}))
        return found

    def worker_online(self, pool: str) -> bool:
        try:
            workers = self.post(f"/work_pools/{pool}/workers/filter", {})
        except (BenchError, httpx.HTTPError):
            return False
        return any(worker.get("status") == "ONLINE" for worker in workers)

    def rss_cpu(self) -> tuple[float, float]:
        return process_usage(self.procs.running.get("prefect-server"))


def process_usage(process: subprocess.Popen[bytes] | None) -> tuple[float, float]:
    """(RSS MB, CPU seconds user+system) of a process and its children; zeros once it is gone."""
    if process is None:
        return 0.0, 0.0
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
        rss = sum(p.memory_info().rss for p in tree) / 2**20
        cpu = sum(sum(p.cpu_times()[:2]) for p in tree)
        return round(rss, 1), round(cpu, 2)
    except psutil.Error:
        return 0.0, 0.0


def parse_time(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


# --- (a) ORCH ------------------------------------------------------------------------------------

class OrchDb:
    """A fresh SQLite ORCH database under its own ORCH_HOME, migrated to head, and its queue."""

    def __init__(self, home: Path, extra: dict[str, str] | None = None) -> None:
        from orch.config.loader import load_settings
        from orch.dispatch.queue import TaskQueue
        from orch.storage.migrate import upgrade

        home.mkdir(parents=True)
        self.home = home
        self.url = f"sqlite:///{home / 'data' / 'orch.db'}"
        self.env = {**clean_environ(), "ORCH_HOME": str(home), "DATABASE_URL": self.url, **(extra or {})}
        self.settings = load_settings(environ=self.env, generate_secrets=False)
        upgrade(self.settings.database)
        self.queue = TaskQueue(self.settings)

    def body(self, number: int, cores: int) -> dict[str, Any]:
        """A dispatch request as the API receives it."""
        return {"core_id": f"WORK_AI_{number % cores:02d}", "action": "noop", "metadata": {"source": "bench"}}

    def submit(self, number: int, cores: int) -> str:
        from orch.dispatch.request import validate

        view, _ = self.queue.enqueue(validate(self.body(number, cores), self.settings), OWNER)
        return view["task_id"]

    def submit_many(self, numbers: range, cores: int) -> list[str]:
        from orch.dispatch.request import validate

        tasks = [validate(self.body(n, cores), self.settings) for n in numbers]
        return [view["task_id"] for view, _ in self.queue.enqueue_many(tasks, OWNER)]

    def rows(self, ids: list[str] | None = None) -> list[tuple[str, str, float, float | None, float | None]]:
        """(task_id, status, created, started, finished) as epoch seconds, read from the queue of record."""
        from sqlalchemy import select

        from orch.storage.engine import session_scope
        from orch.storage.models import Task

        out = []
        with session_scope(self.settings.database) as session:
            query = select(Task.task_id, Task.status, Task.created_at, Task.started_at, Task.finished_at)
            for task_id, status, created, started, finished in session.execute(query):
                out.append((task_id, status, created.timestamp(), started.timestamp() if started else None,
                            finished.timestamp() if finished else None))
        if ids is not None:
            wanted = set(ids)
            out = [row for row in out if row[0] in wanted]
        return out

    def counts(self) -> dict[str, int]:
        from sqlalchemy import func, select

        from orch.storage.engine import session_scope
        from orch.storage.models import Task

        with session_scope(self.settings.database) as session:
            return dict(session.execute(select(Task.status, func.count()).group_by(Task.status)).all())

    def close(self) -> None:
        from orch.storage.engine import dispose_engines

        dispose_engines()


def accept_once(workdir: Path, sizes: Sizes, number: int) -> dict[str, float]:
    """Single enqueues and batched enqueues, each into a fresh database (nothing running against it)."""
    from orch.config.schema import DispatchSettings

    depth = DispatchSettings().max_queue_depth
    extra = {"ORCH_DISPATCH__MAX_QUEUE_DEPTH": str(sizes.batched)} if sizes.batched > depth else {}

    db = OrchDb(workdir / f"accept-single-{number}", extra)
    tenth = max(1, sizes.single // 10)
    marks: list[float] = []
    began = time.perf_counter()
    for n in range(sizes.single):
        db.submit(n, sizes.cores)
        if (n + 1) % tenth == 0:
            marks.append(time.perf_counter())
    single_s = time.perf_counter() - began
    db.close()
    first = tenth / (marks[0] - began)
    last = tenth / (marks[-1] - marks[-2]) if len(marks) > 1 else first

    db = OrchDb(workdir / f"accept-batched-{number}", extra)
    began = time.perf_counter()
    for start in range(0, sizes.batched, sizes.batch):
        db.submit_many(range(start, min(sizes.batched, start + sizes.batch)), sizes.cores)
    batched_s = time.perf_counter() - began
    db.close()
    return {"single_per_s": round(sizes.single / single_s, 1), "batched_per_s": round(sizes.batched / batched_s, 1),
            "single_first_tenth_per_s": round(first, 1), "single_last_tenth_per_s": round(last, 1)}


def run_accept(workdir: Path, sizes: Sizes, runs: int) -> dict[str, Any]:
    results = []
    for number in range(1, runs + 1):
        result = accept_once(workdir, sizes, number)
        results.append(result)
        say(f"accept run {number}: single {result['single_per_s']:,.0f}/s, batched {result['batched_per_s']:,.0f}/s")
    return {"runs": results, "single_per_s": spread([r["single_per_s"] for r in results], 0),
            "batched_per_s": spread([r["batched_per_s"] for r in results], 0),
            "single_first_tenth_per_s": spread([r["single_first_tenth_per_s"] for r in results], 0),
            "single_last_tenth_per_s": spread([r["single_last_tenth_per_s"] for r in results], 0)}


class Dispatcher:
    """One ``python -m orch.dispatch.service`` against the benchmark's database and Prefect server,
    started with the environment ``orch up`` gives it."""

    def __init__(self, db: OrchDb, prefect: Prefect, procs: Processes) -> None:
        self.db = db
        self.prefect = prefect
        self.procs = procs
        self.env = {**prefect.client_env(), **{k: v for k, v in db.env.items() if k.startswith(("ORCH_", "DATABASE"))},
                    "PREFECT_LOGGING_EXTRA_LOGGERS": "orch,flows,tasks,blocks,deployments"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = self.procs.spawn("dispatcher", [sys.executable, "-m", "orch.dispatch.service"], self.env,
                                        PROJECT_ROOT)

    def alive(self) -> None:
        self.procs.alive("dispatcher")()

    def usage(self) -> dict[str, float]:
        rss, cpu = process_usage(self.process)
        try:
            threads = psutil.Process(self.process.pid).num_threads() if self.process else 0
        except psutil.Error:
            threads = 0
        return {"rss_mb": rss, "cpu_s": cpu, "threads": threads}


def wait_finished(db: OrchDb, ids: list[str], timeout: float, dispatcher: Dispatcher, what: str) -> None:
    wanted = set(ids)

    def done() -> bool:
        return all(status in TERMINAL for task_id, status, *_ in db.rows() if task_id in wanted)

    wait_until(done, timeout, what, dispatcher.alive, dispatcher.procs.log("dispatcher"))


def latencies(rows: list[tuple[str, str, float, float | None, float | None]]) -> dict[str, Any]:
    started = [r for r in rows if r[3] is not None]
    finished = [r for r in rows if r[4] is not None and r[1] == "completed"]
    return {"submit_to_start_ms": percentiles([(r[3] - r[2]) * 1000 for r in started]),
            "submit_to_finish_ms": percentiles([(r[4] - r[2]) * 1000 for r in finished]),
            "start_to_finish_ms": percentiles([(r[4] - r[3]) * 1000 for r in finished if r[3] is not None])}


def prefect_catch_up(prefect: Prefect, expected: int, last_finish: float) -> dict[str, Any]:
    """Seconds from ``last_finish`` (epoch) until the server reports ``expected`` final orch task runs."""
    deadline = time.monotonic() + LAG_TIMEOUT
    seen = 0
    while time.monotonic() < deadline:
        seen = prefect.final_orch_task_runs()
        if seen >= expected:
            return {"lag_s": round(max(0.0, time.time() - last_finish), 2), "recorded": seen, "expected": expected}
        time.sleep(POLL_SECONDS)
    return {"lag_s": None, "recorded": seen, "expected": expected,
            "note": f"not caught up {LAG_TIMEOUT:.0f} s after the last ORCH task finished"}


def run_orch(workdir: Path, sizes: Sizes, prefect: Prefect, procs: Processes,
             concurrency: int | None) -> dict[str, Any]:
    from orch.config.schema import DispatchSettings

    extra = {}
    if sizes.burst > DispatchSettings().max_queue_depth:
        extra["ORCH_DISPATCH__MAX_QUEUE_DEPTH"] = str(sizes.burst)
    if concurrency is not None:
        extra["ORCH_DISPATCH__CONCURRENCY"] = str(concurrency)
    db = OrchDb(workdir / "dispatch", extra)
    dispatcher = Dispatcher(db, prefect, procs)
    result: dict[str, Any] = {"settings": {
        "concurrency": db.settings.dispatch.concurrency, "poll_seconds": db.settings.dispatch.poll_seconds,
        "core_concurrency": db.settings.dispatch.core_concurrency, "cores": sizes.cores,
        "max_concurrent_tasks": db.settings.features.max_concurrent_tasks,
        "lease_seconds": db.settings.dispatch.lease_seconds}}
    began = time.monotonic()
    dispatcher.start()
    try:
        warm = [db.submit(n, sizes.cores) for n in range(sizes.warmup)]
        wait_finished(db, warm, READY_TIMEOUT, dispatcher, f"{sizes.warmup} warm-up tasks completed")
        result["ready_s"] = round(time.monotonic() - began, 1)
        say(f"dispatcher ran its warm-up tasks {result['ready_s']:.1f} s after it was started")

        # idle: one at a time, ~100 ms apart, nothing else queued
        idle_ids = []
        first = time.monotonic()
        for n in range(sizes.idle):
            idle_ids.append(db.submit(n, sizes.cores))
            time.sleep(max(0.0, first + (n + 1) * sizes.idle_gap_s - time.monotonic()))
        wait_finished(db, idle_ids, READY_TIMEOUT, dispatcher, f"{sizes.idle} idle tasks finished")
        rows = db.rows(idle_ids)
        result["idle"] = {"tasks": sizes.idle, "gap_s": sizes.idle_gap_s, **latencies(rows),
                          "statuses": count_statuses(rows)}
        started_so_far = sum(1 for r in db.rows() if r[3] is not None)
        result["idle"]["prefect"] = prefect_catch_up(prefect, started_so_far, max(r[4] or 0 for r in rows))
        idle = result["idle"]
        say(f"idle: submit→start p50 {idle['submit_to_start_ms'].get('p50')} ms; Prefect caught up "
            f"{idle['prefect']['lag_s']} s after the last task finished")

        result["load"] = run_burst(db, sizes, prefect, dispatcher)
        load = result["load"]
        say(f"load: {load['completed']} of {sizes.burst} completed, {load['tasks_per_s']} tasks/s end to end")
        started_total = sum(1 for r in db.rows() if r[3] is not None)
        last_finish = max((r[4] or 0) for r in db.rows())
        load["prefect"] = prefect_catch_up(prefect, started_total, last_finish)
        say(f"Prefect recorded all {started_total} ORCH task runs {load['prefect']['lag_s']} s after the last "
            f"one finished")
        result["dispatcher_usage_end"] = dispatcher.usage()
    finally:
        if "dispatcher" in procs.running:
            code, seconds = procs.stop("dispatcher")
            result["stop"] = {"signal": "SIGTERM", "exit_code": code, "seconds": seconds,
                              "left_running": db.counts().get("running", 0),
                              "log_says_crashed": "Crashed(" in procs.log("dispatcher").read_text(errors="replace")}
        db.close()
    return result


def count_statuses(rows: list[tuple[str, str, float, float | None, float | None]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    return counts


def run_burst(db: OrchDb, sizes: Sizes, prefect: Prefect, dispatcher: Dispatcher) -> dict[str, Any]:
    """Enqueue the burst in batches, follow it until done or cut off, then read it back."""
    server_before, dispatcher_before = prefect.rss_cpu(), dispatcher.usage()
    prefect_before = prefect.final_orch_task_runs()
    began, began_wall = time.monotonic(), time.time()
    ids: list[str] = []
    for start in range(0, sizes.burst, sizes.batch):
        ids.extend(db.submit_many(range(start, min(sizes.burst, start + sizes.batch)), sizes.cores))
    enqueue_s = time.monotonic() - began
    wanted = set(ids)
    samples = []
    cut_off = False
    last_sample = 0.0
    while True:
        dispatcher.alive()
        rows = [r for r in db.rows() if r[0] in wanted]
        done = sum(1 for r in rows if r[1] in TERMINAL)
        now = time.monotonic()
        if now - last_sample >= 2.0 or done == len(ids):
            usage = dispatcher.usage()
            samples.append({"t_s": round(now - began, 1), "orch_done": done,
                            "prefect_final": prefect.final_orch_task_runs() - prefect_before,
                            "dispatcher_threads": usage["threads"], "dispatcher_rss_mb": usage["rss_mb"]})
            last_sample = now
        if done == len(ids):
            break
        if now - began > sizes.load_timeout_s:
            cut_off = True
            break
        time.sleep(0.5)
    cancelled = 0
    if cut_off:  # cancel what is still queued so the dispatcher drains and the lag can be measured
        for task_id, status, *_ in db.rows(ids):
            if status == "queued":
                try:
                    db.queue.cancel(task_id, "bench")
                    cancelled += 1
                except Exception:  # noqa: BLE001 - claimed meanwhile: it runs to the end
                    pass
        wait_finished(db, ids, READY_TIMEOUT, dispatcher, "the burst's running tasks finished after the cut-off")
    server_after, dispatcher_after = prefect.rss_cpu(), dispatcher.usage()
    rows = db.rows(ids)
    completed = [r for r in rows if r[1] == "completed"]
    first_created = min(r[2] for r in rows)
    last_finished = max((r[4] for r in completed), default=first_created)
    elapsed = max(1e-6, last_finished - first_created)
    return {"tasks": sizes.burst, "enqueue_s": round(enqueue_s, 2), "cut_off": cut_off,
            "cut_off_after_s": sizes.load_timeout_s if cut_off else None, "cancelled_queued": cancelled,
            "completed": len(completed), "statuses": count_statuses(rows),
            "first_created_to_last_finished_s": round(elapsed, 2),
            "tasks_per_s": round(len(completed) / elapsed, 1), **latencies(rows),
            "wall_s": round(time.time() - began_wall, 1),
            "cpu_s": {"prefect_server": round(server_after[1] - server_before[1], 1),
                      "dispatcher": round(dispatcher_after["cpu_s"] - dispatcher_before["cpu_s"], 1)},
            "dispatcher_threads": {"before": dispatcher_before["threads"], "after": dispatcher_after["threads"]},
            "dispatcher_rss_mb": {"before": dispatcher_before["rss_mb"], "after": dispatcher_after["rss_mb"]},
            "samples": samples}


# --- (b) the naive way: one deployment run per task -----------------------------------------------

def prefect_cli(prefect: Prefect, procs: Processes, name: str, argv: list[str], cwd: Path,
                tolerate: str | None = None) -> None:
    log = procs.log(name)
    with open(log, "ab") as output:
        result = subprocess.run(argv, cwd=cwd, env=prefect.client_env(), stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, timeout=READY_TIMEOUT)
    if result.returncode != 0 and not (tolerate and tolerate in log.read_text(errors="replace")):
        raise BenchError(f"{name}: `{Path(argv[0]).name} {' '.join(argv[1:3])}` exited with code "
                         f"{result.returncode}", log_tail(log))


def run_naive(workdir: Path, sizes: Sizes, prefect: Prefect, procs: Processes) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    flow_dir = workdir / "naive-flow"
    flow_dir.mkdir()
    (flow_dir / "noop_flow.py").write_text(NOOP_FLOW.format(name=FLOW_NAME), encoding="utf-8")
    began = time.monotonic()
    prefect_cli(prefect, procs, "work-pool", [str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process"],
                flow_dir, tolerate="already exists")
    prefect_cli(prefect, procs, "deploy", [sys.executable, "-c", DEPLOY_SNIPPET, str(flow_dir), DEPLOYMENT, POOL],
                flow_dir)
    env = {**prefect.client_env(), "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS}
    procs.spawn("worker", [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                           "--install-policy", "never"], env, flow_dir)
    wait_until(lambda: prefect.worker_online(POOL), READY_TIMEOUT, "process worker ONLINE", procs.alive("worker"),
               procs.log("worker"))
    name = f"{FLOW_NAME}/{DEPLOYMENT}"
    warm = run_deployment(name, timeout=0)
    wait_flow_runs(prefect, [str(warm.id)], procs, "the warm-up deployment run")
    ready_s = round(time.monotonic() - began, 1)
    say(f"naive: pool, deployment, worker and a warm-up run ready in {ready_s:.1f} s")

    submitted: dict[str, float] = {}
    first = time.time()
    for _ in range(sizes.naive_runs):
        at = time.time()
        submitted[str(run_deployment(name, timeout=0).id)] = at
    submit_s = time.time() - first
    wait_flow_runs(prefect, list(submitted), procs, f"{sizes.naive_runs} deployment runs final",
                   timeout=max(READY_TIMEOUT, 15.0 * sizes.naive_runs))
    runs = prefect.flow_runs(list(submitted))
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    last_end = max((parse_time(r["end_time"]) or first for r in completed), default=first)
    starts = [(parse_time(r["start_time"]) - submitted[r["id"]]) * 1000 for r in runs if r.get("start_time")]
    finishes = [(parse_time(r["end_time"]) - submitted[r["id"]]) * 1000 for r in completed]
    procs.stop("worker")
    elapsed = max(1e-6, last_end - first)
    return {"runs": sizes.naive_runs, "ready_s": ready_s, "submit_per_s": round(sizes.naive_runs / submit_s, 1),
            "completed": len(completed), "states": count_values(r["state_type"] for r in runs),
            "first_submit_to_last_end_s": round(elapsed, 2), "runs_per_s": round(len(completed) / elapsed, 3),
            "submit_to_start_ms": percentiles(starts), "submit_to_finish_ms": percentiles(finishes),
            "worker_query_seconds": float(WORKER_QUERY_SECONDS)}


def count_values(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def wait_flow_runs(prefect: Prefect, ids: list[str], procs: Processes, what: str,
                   timeout: float = READY_TIMEOUT) -> None:
    def final() -> bool:
        return all(r["state_type"] in FINAL_STATES for r in prefect.flow_runs(ids)) and len(ids) > 0

    wait_until(final, timeout, what, procs.alive("worker"), procs.log("worker"), interval=0.5)


# --- (c) Prefect background tasks --------------------------------------------------------------

def run_background(workdir: Path, sizes: Sizes, prefect: Prefect, procs: Processes) -> dict[str, Any]:
    task_dir = workdir / "bg-task"
    task_dir.mkdir()
    (task_dir / "bench_bg_tasks.py").write_text(BG_MODULE.format(name=BG_TASK), encoding="utf-8")
    began = time.monotonic()
    # --module, not a file path: the task key hashes the function's code object, file name included, so the
    # worker and this process must import the very same file the same way.
    procs.spawn("task-worker", [str(BIN / "prefect"), "task", "serve", "--module", "bench_bg_tasks"],
                {**prefect.client_env(), "PYTHONPATH": str(task_dir)}, task_dir)
    sys.path.insert(0, str(task_dir))
    import bench_bg_tasks  # type: ignore[import-not-found]

    task = getattr(bench_bg_tasks, BG_TASK)
    alive = procs.alive("task-worker")
    warm = task.delay(-1)
    wait_until(lambda: warm.state.is_final(), READY_TIMEOUT, "the warm-up background task", alive,
               procs.log("task-worker"), interval=0.2)
    warm.result(timeout=30)
    ready_s = round(time.monotonic() - began, 1)
    say(f"background: task worker ran its warm-up task {ready_s:.1f} s after it was started")

    submitted: dict[str, float] = {}
    futures = []
    first = time.time()
    for n in range(sizes.bg_tasks):
        at = time.time()
        future = task.delay(n)
        submitted[str(future.task_run_id)] = at
        futures.append(future)
    last_submit = time.time()
    deadline = time.monotonic() + max(READY_TIMEOUT, 2.0 * sizes.bg_tasks)
    results_ok = 0
    for future in futures:
        alive()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"background tasks: results not all available within "
                             f"{max(READY_TIMEOUT, 2.0 * sizes.bg_tasks):.0f} s", log_tail(procs.log("task-worker")))
        try:
            future.result(timeout=remaining)
            results_ok += 1
        except Exception:  # noqa: BLE001 - a failed task still counts as done; it is reported
            pass
    all_done = time.time()
    runs = prefect.task_runs(list(submitted))
    starts = [(parse_time(r["start_time"]) - submitted[r["id"]]) * 1000 for r in runs if r.get("start_time")]
    finishes = [(parse_time(r["end_time"]) - submitted[r["id"]]) * 1000 for r in runs
                if r.get("end_time") and r["state_type"] == "COMPLETED"]
    procs.stop("task-worker")
    return {"tasks": sizes.bg_tasks, "ready_s": ready_s,
            "submit_per_s": round(sizes.bg_tasks / max(1e-6, last_submit - first), 1),
            "submit_s": round(last_submit - first, 2), "results_ok": results_ok,
            "states": count_values(r["state_type"] for r in runs),
            "first_submit_to_all_results_s": round(all_done - first, 2),
            "last_submit_to_all_results_s": round(all_done - last_submit, 2),
            "tasks_per_s": round(results_ok / max(1e-6, all_done - first), 1),
            "submit_to_start_ms": percentiles(starts), "submit_to_finish_ms": percentiles(finishes)}


# --- (d) the user's path: a running `orch up`, dispatches over HTTP -------------------------------

STACK_USER = "bench-admin"
STACK_PASSWORD = "bench-Password-0123"
STACK_CLIENTS = 32
STACK_BATCH = 100  # tasks per POST /dispatch/batch (the API's limit)
START_ATTEMPTS = 3
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CELERY_URL = "redis://127.0.0.1:6379/15"
CELERY_MODULE = '''import time

from celery import Celery

app = Celery("bench_celery", broker="{url}", backend="{url}")
app.conf.update(task_acks_late=False, worker_prefetch_multiplier=4, result_expires=3600)


@app.task(name="bench_celery.noop")
def noop(i: int) -> float:
    """Does nothing but say when it ran: what is measured is everything around it."""
    return time.time()
'''
PROCESS_LABELS = ("orch api", "worker", "prefect server")  # CPU is accounted per these (bench_startup's labels)


@dataclass
class Answer:
    sent: float  # epoch seconds
    answered: float
    status: int
    body: bytes


async def _post_all(port: int, token: str, path: str, bodies: list[bytes], clients: int) -> list[Answer]:
    """``clients`` keep-alive connections, each sending the next body as soon as its last one was answered.
    Raw HTTP/1.1 on asyncio streams: on 2 cores an httpx client would take CPU from the server measured."""
    pending = iter(enumerate(bodies))
    answers: list[Answer | None] = [None] * len(bodies)
    auth = f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nHost: 127.0.0.1\r\n"

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index, body in pending:
                sent = time.time()
                writer.write(f"POST {path} HTTP/1.1\r\n{auth}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                status = int((await reader.readline()).split()[1])
                length, close = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                answers[index] = Answer(sent, time.time(), status, await reader.readexactly(length))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return [answer for answer in answers if answer is not None]


def post_all(port: int, token: str, path: str, bodies: list[dict[str, Any]], clients: int) -> list[Answer]:
    encoded = [json.dumps(body, separators=(",", ":")).encode() for body in bodies]
    return asyncio.run(_post_all(port, token, path, encoded, clients))


def statuses(answers: list[Answer]) -> dict[str, int]:
    return count_values(str(answer.status) for answer in answers)


def rate(count: int, answers: list[Answer]) -> float:
    """Accepted per second, from the first request sent to the last answer."""
    if not answers:
        return 0.0
    wall = max(a.answered for a in answers) - min(a.sent for a in answers)
    return round(count / max(wall, 1e-6), 1)

# What `orch up` would start as its Prefect server, read by the measured tree's own code (an older tree's
# components have no CPU priority: 0).
SERVER_COMPONENT = """
import json
from orch.config.loader import load_settings
from orch.stack.up import child_environment, components
settings = load_settings(None)
server = components(settings, child_environment(settings, None), "orch-process")["prefect-server"]
print(json.dumps({"argv": server.argv, "env": server.env, "cwd": str(server.cwd), "nice": getattr(server, "nice", 0)}))
"""


class StackPrefect:
    """The Prefect server the stacks use, started as `orch up` starts its own (argv, environment, auth
    string) but by this benchmark: `orch up` gives its components 120 s to become healthy, which a
    Prefect server on a 2-core machine shared with other work can exceed; the stacks then find it
    through ``PREFECT_API_URL``, as `orch up` does an existing server. Its component (argv, environment,
    CPU priority) is the one the measured tree's `orch up` would start (``--tree``: that copy's code)."""

    def __init__(self, workdir: Path, procs: Processes, tree: Path | None = None) -> None:
        from bench_startup import PREFECT_AUTH_ENV

        self.home = workdir / "stack-prefect"
        self.home.mkdir()
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.procs = procs
        env = {**clean_environ(), "ORCH_HOME": str(self.home), "PREFECT_SERVER_API_PORT": str(self.port),
               **PREFECT_AUTH_ENV, **({"PYTHONPATH": str(tree)} if tree else {})}
        found = subprocess.run([sys.executable, "-c", SERVER_COMPONENT], env=env, cwd=tree or PROJECT_ROOT,
                               capture_output=True, text=True, timeout=120)
        if found.returncode != 0:
            raise BenchError("the Prefect server `orch up` would start could not be read",
                             found.stderr.splitlines()[-3:])
        self.server = json.loads(found.stdout)

    def start(self) -> float:
        began = time.monotonic()
        self.process = self.procs.spawn("stack-prefect-server", self.server["argv"], self.server["env"],
                                        Path(self.server["cwd"]), self.server["nice"])
        name = "stack-prefect-server"
        wait_until(self._ready, 600.0, "the stacks' Prefect server /api/ready", self.procs.alive(name),
                   self.procs.log(name), interval=0.5)
        return round(time.monotonic() - began, 1)

    def _ready(self) -> bool:
        try:
            return httpx.get(self.api + "/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def cpu_s(self) -> float:
        return process_usage(self.process)[1]


class Stack:
    """A real ``orch up`` (``bench_startup.OrchUp``: its environment, ports, checks and stop), one admin
    made by the CLI as an operator would, and the bearer token every client uses."""

    def __init__(self, home: Path, database_url: str | None, tree: Path | None, prefect: StackPrefect) -> None:
        from bench_startup import Endpoints, OrchUp, deployment_count

        home.mkdir(parents=True)
        extra = {"PREFECT_API_URL": prefect.api,
                 "ORCH_SECURITY__RATE_LIMIT__REQUESTS_PER_MINUTE": "10000000",  # one user sends everything
                 "ORCH_SECURITY__RATE_LIMIT__BURST_SIZE": "10000000", "ORCH_DISPATCH__MAX_QUEUE_DEPTH": "1000000",
                 **({"DATABASE_URL": database_url} if database_url else {})}
        self.up = OrchUp(home, Endpoints(prefect.port, free_port(), deployment_count(tree)), tree, extra)
        self.prefect = prefect
        self.home = home
        self.token = ""

    def start(self) -> float:
        began = time.monotonic()
        self.up.wait_until_up()
        user = subprocess.run([str(BIN / "orch"), "user", "create-admin", "--username", STACK_USER,
                               "--password-stdin"], input=STACK_PASSWORD + "\n", env=self.up.env, cwd=self.home,
                              capture_output=True, text=True, timeout=120)
        if user.returncode != 0:
            raise BenchError("`orch user create-admin` failed", user.stderr.splitlines()[-3:])
        answer = httpx.post(self.up.ends.orch_api + "/auth/token",
                            data={"username": STACK_USER, "password": STACK_PASSWORD}, timeout=30)
        if answer.status_code != 200:
            raise BenchError(f"POST /auth/token answered HTTP {answer.status_code}", [answer.text[:200]])
        self.token = answer.json()["access_token"]
        return round(time.monotonic() - began, 1)

    @property
    def port(self) -> int:
        return self.up.ends.api_port

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(self.up.ends.orch_api + path, params=params, timeout=60,
                           headers={"Authorization": f"Bearer {self.token}"})
        if answer.status_code != 200:
            raise BenchError(f"GET {path} answered HTTP {answer.status_code}", [answer.text[:200]])
        return answer.json()

    def unfinished(self) -> int:
        """Queued or running tasks, as the API tells (at most 2: the question is only whether any are left)."""
        return sum(len(self.get("/tasks", status=status, limit=1)["tasks"]) for status in ("queued", "running"))

    def tasks_since(self, since: float) -> list[dict[str, Any]]:
        """Every task created at or after ``since``, read back through the API's pages."""
        out: list[dict[str, Any]] = []
        cursor = None
        stamp = datetime.fromtimestamp(since - 1, tz=timezone.utc).isoformat()
        while True:
            page = self.get("/tasks", since=stamp, limit=500, **({"cursor": cursor} if cursor else {}))
            out.extend(page["tasks"])
            if not (cursor := page["next_cursor"]):
                return out

    def prefect_final(self) -> int:
        """ORCH task runs (the ``dispatch`` flow's) the stack's Prefect server has recorded final."""
        from bench_startup import prefect_auth_headers

        answer = httpx.post(self.up.ends.prefect_api + "/task_runs/count", headers=prefect_auth_headers(),
                            timeout=30, json={"flows": {"name": {"any_": [DISPATCH_FLOW]}},
                                              "task_runs": {"state": {"type": {"any_": FINAL_STATES}}}})
        return int(answer.json()) if answer.status_code == 200 else -1

    def cpu_s(self) -> dict[str, float]:
        """CPU-seconds (user + system) so far of each component, its descendants included."""
        from bench_startup import component_label, descendants

        usage = dict.fromkeys(PROCESS_LABELS, 0.0)
        usage["prefect server"] = self.prefect.cpu_s()
        for root in psutil.Process(self.up.process.pid).children():
            label = component_label(root)
            if label not in usage:
                continue
            for proc in [root, *descendants(root.pid)]:
                with contextlib.suppress(psutil.Error):
                    usage[label] += sum(proc.cpu_times()[:2])
        return usage

    def stop(self) -> None:
        self.up.kill()


def machine_busy_s() -> float:
    """CPU-seconds the whole machine has spent busy (every process, the PostgreSQL server and this benchmark
    included): a phase's share per task says how many tasks a second its cores could carry at most, which a
    figure per process hides when the processes share the cores."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def cpu_ms_per_task(before: dict[str, float], after: dict[str, float], machine_s: float, tasks: int,
                    digits: int) -> dict[str, float]:
    """CPU ms per task of each process (:meth:`Stack.cpu_s` before and after a phase) and of the machine."""
    per = {label: round(1000 * (after[label] - before[label]) / max(1, tasks), digits) for label in PROCESS_LABELS}
    per["machine"] = round(1000 * machine_s / max(1, tasks), digits)
    return per


def noop_body(number: int, cores: int) -> dict[str, Any]:
    return {"core_id": f"WORK_AI_{number % cores:02d}", "action": "noop", "metadata": {"source": "bench"}}


def wait_drained(stack: Stack, timeout: float, what: str) -> None:
    wait_until(lambda: stack.unfinished() == 0, timeout, what, stack.up.alive, interval=0.5)


def run_stack(workdir: Path, name: str, database_url: str | None, sizes: Sizes, tree: Path | None,
              prefect: StackPrefect) -> dict[str, Any]:
    """One stack: warm-up, then single dispatches by 32 clients run to the end (accept rate, end to end,
    CPU per task), then batches of 100 by 32 clients (accept rate only; the stack is stopped after)."""
    result: dict[str, Any] = {"database": name, "clients": STACK_CLIENTS, "start_attempts": 0}
    while True:  # `orch up` gives up after 120 s; on a machine shared with other work a start may need longer
        result["start_attempts"] += 1
        stack = Stack(workdir / f"stack-{name}-{result['start_attempts']}", database_url, tree, prefect)
        try:
            result["ready_s"] = stack.start()
            break
        except BenchError as exc:
            stack.stop()
            if result["start_attempts"] == START_ATTEMPTS:
                raise
            say(f"stack {name} did not start (load average {os.getloadavg()[0]:.1f}), again: {exc.args[0]}")
    try:
        warm = post_all(stack.port, stack.token, "/dispatch", [noop_body(n, sizes.cores) for n in range(sizes.warmup)],
                        1)
        if any(a.status != 202 for a in warm):
            raise BenchError(f"POST /dispatch answered {statuses(warm)}", [warm[0].body.decode()[:300]])
        wait_drained(stack, READY_TIMEOUT, f"{sizes.warmup} warm-up tasks through the stack ({name})")
        recorded_before = wait_prefect(stack, sizes.warmup, 60.0)

        cpu_before, machine_before, began = stack.cpu_s(), machine_busy_s(), time.time()
        answers = post_all(stack.port, stack.token, "/dispatch",
                           [noop_body(n, sizes.cores) for n in range(sizes.http_single)], STACK_CLIENTS)
        accepted = [a for a in answers if a.status == 202]
        wait_drained(stack, sizes.load_timeout_s, f"{len(accepted)} tasks through the stack ({name})")
        drained = time.time()
        tasks = [t for t in stack.tasks_since(began) if t["created_at"] and parse_time(t["created_at"]) >= began - 1]
        finished = [parse_time(t["finished_at"]) for t in tasks if t["finished_at"]]
        end = max(finished, default=drained)
        recorded = wait_prefect(stack, recorded_before + len(accepted), LAG_TIMEOUT)
        prefect_done = time.time()
        cpu_after, machine_after = stack.cpu_s(), machine_busy_s()
        per_task = cpu_ms_per_task(cpu_before, cpu_after, machine_after - machine_before, len(accepted), 2)
        result["single"] = {
            "sent": len(answers), "statuses": statuses(answers), "accepted_per_s": rate(len(accepted), answers),
            "latency_ms": percentiles([1000 * (a.answered - a.sent) for a in answers]),
            "tasks_read_back": len(tasks), "task_statuses": count_values(t["status"] for t in tasks),
            "end_to_end_s": round(end - began, 2), "tasks_per_s": round(len(accepted) / max(end - began, 1e-6), 1),
            "prefect_recorded": recorded, "prefect_lag_s": round(prefect_done - end, 1),
            "cpu_ms_per_task": per_task, "cpu_s": {k: round(cpu_after[k] - cpu_before[k], 1) for k in PROCESS_LABELS},
            "wall_s": round(prefect_done - began, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}
        single = result["single"]
        say(f"stack {name}: single {single['accepted_per_s']:,.0f}/s accepted ({single['statuses']}), "
            f"{single['tasks_per_s']:.1f} tasks/s end to end; CPU ms/task {per_task}")

        bodies = [{"tasks": [noop_body(n * STACK_BATCH + k, sizes.cores) for k in range(STACK_BATCH)]}
                  for n in range(sizes.http_batches)]
        cpu_before, machine_before = stack.cpu_s(), machine_busy_s()
        answers = post_all(stack.port, stack.token, "/dispatch/batch", bodies, STACK_CLIENTS)
        cpu_after, machine_after = stack.cpu_s(), machine_busy_s()
        accepted_tasks = STACK_BATCH * sum(1 for a in answers if a.status == 202)
        batch_cpu = cpu_ms_per_task(cpu_before, cpu_after, machine_after - machine_before, accepted_tasks, 3)
        result["batch"] = {"batches": len(answers), "batch_size": STACK_BATCH, "statuses": statuses(answers),
                           "accepted_tasks_per_s": rate(accepted_tasks, answers), "cpu_ms_per_task": batch_cpu,
                           "latency_ms": percentiles([1000 * (a.answered - a.sent) for a in answers])}
        say(f"stack {name}: batches of {STACK_BATCH}: {result['batch']['accepted_tasks_per_s']:,.0f} tasks/s "
            f"accepted ({result['batch']['statuses']})")
    finally:
        stack.stop()
    return result


def wait_prefect(stack: Stack, expected: int, timeout: float) -> int:
    """Until the Prefect server has recorded ``expected`` ORCH task runs final (or ``timeout``); how many it had."""
    seen = [0]

    def caught_up() -> bool:
        seen[0] = stack.prefect_final()
        return seen[0] >= expected

    with contextlib.suppress(BenchError):
        wait_until(caught_up, timeout, "Prefect recording", stack.up.alive, interval=0.5)
    return seen[0]


@contextlib.contextmanager
def throwaway_postgres() -> Iterable[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""
    from sqlalchemy import create_engine, make_url, text

    name = f"orch_bench_{os.getpid()}_{int(time.time())}"
    from orch.storage.engine import normalise_url

    engine = create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - one line: the database is what is missing
        raise BenchError(f"PostgreSQL at {PG_ADMIN_URL} is needed for the PostgreSQL stack: {exc}") from None
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def run_celery(workdir: Path, sizes: Sizes, procs: Processes) -> dict[str, Any]:
    """The peer baseline: a Celery worker (prefork, one process per CPU) with a no-op task, Redis as broker
    and result backend (db 15, emptied first), 32 client threads calling ``.delay()``."""
    import importlib
    from concurrent.futures import ThreadPoolExecutor

    import redis

    home = workdir / "celery"
    home.mkdir()
    (home / "bench_celery.py").write_text(CELERY_MODULE.format(url=CELERY_URL), encoding="utf-8")
    redis.Redis.from_url(CELERY_URL).flushdb()
    env = {**clean_environ(), "PYTHONPATH": str(home)}
    worker = procs.spawn("celery-worker", [str(BIN / "celery"), "-A", "bench_celery", "worker", "--loglevel=WARNING",
                                           "--without-gossip", "--without-mingle", "--without-heartbeat"], env, home)
    sys.path.insert(0, str(home))
    try:
        module = importlib.import_module("bench_celery")
        wait_until(lambda: bool(module.app.control.ping(timeout=0.5)), READY_TIMEOUT, "the Celery worker to answer",
                   procs.alive("celery-worker"), procs.log("celery-worker"))
        module.noop.delay(-1).get(timeout=60)  # warm-up: connections and the worker's pool
        cpu_before = process_usage(worker)[1]
        results: list[Any] = [None] * sizes.http_single
        sent_at: list[float] = [0.0] * sizes.http_single
        answered_at: list[float] = [0.0] * sizes.http_single

        def send(index: int) -> None:
            sent_at[index] = time.time()
            results[index] = module.noop.delay(index)
            answered_at[index] = time.time()

        began = time.time()
        with ThreadPoolExecutor(STACK_CLIENTS) as pool:
            list(pool.map(send, range(sizes.http_single)))
        accepted_s = max(answered_at) - began
        ran_at = [r.get(timeout=sizes.load_timeout_s) for r in results]
        end = max(ran_at)
        cpu = process_usage(worker)[1] - cpu_before
        figures = {"tasks": sizes.http_single, "accepted_per_s": round(sizes.http_single / accepted_s, 1),
                   "tasks_per_s": round(sizes.http_single / max(end - began, 1e-6), 1),
                   "end_to_end_s": round(end - began, 2),
                   "delay_latency_ms": percentiles([1000 * (a - s) for s, a in zip(sent_at, answered_at, strict=True)]),
                   "worker_cpu_ms_per_task": round(1000 * cpu / sizes.http_single, 2),
                   "celery": version("celery"), "load_avg_1m": round(os.getloadavg()[0], 2)}
        say(f"celery: {figures['accepted_per_s']:,.0f}/s accepted, {figures['tasks_per_s']:.1f} tasks/s end to end")
        return figures
    finally:
        sys.path.remove(str(home))
        procs.stop("celery-worker")


def run_user_path(workdir: Path, sizes: Sizes, databases: list[str], tree: Path | None,
                  procs: Processes) -> dict[str, Any]:
    prefect = StackPrefect(workdir, procs, tree)
    out: dict[str, Any] = {"prefect_server_ready_s": prefect.start()}
    say(f"the stacks' Prefect server is ready on port {prefect.port} ({out['prefect_server_ready_s']} s)")
    for name in databases:
        say(f"(d) the user's path: `orch up` on {name}, {STACK_CLIENTS} HTTP clients")
        if name == "postgresql":
            with throwaway_postgres() as url:
                out[name] = run_stack(workdir, name, url, sizes, tree, prefect)
        else:
            out[name] = run_stack(workdir, name, None, sizes, tree, prefect)
    procs.stop("stack-prefect-server")
    return out


# --- report --------------------------------------------------------------------------------------

def git_state() -> dict[str, Any]:
    """The code measured: the commit and any uncommitted changes (others may be editing this tree)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": dirty}


def fmt(value: float | None, decimals: int = 0) -> str:
    return "–" if value is None else f"{value:,.{decimals}f}"


def pct_cell(figures: dict[str, float] | None) -> str:
    if not figures or not figures.get("n"):
        return "–"
    return f"{fmt(figures['p50'])} / {fmt(figures['p95'])} / {fmt(figures['p99'])}"


def spread_cell(figures: dict[str, float], decimals: int = 0) -> str:
    median, low, high = (fmt(figures[k], decimals) for k in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}–{high})"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def goal_lines(report: dict[str, Any]) -> list[str]:
    accept, orch = report["accept"], report["orch"]
    naive, load, idle = report["naive"], orch["load"], orch["idle"]
    single, batched = accept["single_per_s"]["median"], accept["batched_per_s"]["median"]
    idle_p50 = idle["submit_to_start_ms"].get("p50")
    tasks_per_s = load["tasks_per_s"]
    ratio = tasks_per_s / naive["runs_per_s"] if naive.get("runs_per_s") else None
    cut = (f"; the burst did not finish: {load['completed']:,} of {load['tasks']:,} completed before the "
           f"{load['cut_off_after_s']:.0f} s cut-off, the {load['cancelled_queued']:,} still queued were cancelled"
           if load["cut_off"] else "")
    lines = [
        "Goals (judged on the median of the accept runs and on the single load run):",
        f"- accept ≥ {GOAL_ACCEPT_SINGLE:,.0f} dispatches/s one at a time: {verdict(single >= GOAL_ACCEPT_SINGLE)} "
        f"(measured {single:,.0f}/s{short_of(single, GOAL_ACCEPT_SINGLE)})",
        f"- accept ≥ {GOAL_ACCEPT_BATCHED:,.0f} dispatches/s batched: {verdict(batched >= GOAL_ACCEPT_BATCHED)} "
        f"(measured {batched:,.0f}/s{short_of(batched, GOAL_ACCEPT_BATCHED)})",
        f"- submit→start p50 ≤ {GOAL_IDLE_P50_MS:.0f} ms at idle: "
        f"{verdict(idle_p50 is not None and idle_p50 <= GOAL_IDLE_P50_MS)} (measured p50 {fmt(idle_p50)} ms, "
        f"p99 {fmt(idle['submit_to_start_ms'].get('p99'))} ms)",
        f"- ≥ {GOAL_TASKS_PER_S:.0f} no-op tasks/s end to end: {verdict(tasks_per_s >= GOAL_TASKS_PER_S)} "
        f"(measured {tasks_per_s:,.1f} tasks/s{short_of(tasks_per_s, GOAL_TASKS_PER_S)}{cut})",
        f"- ≥ {GOAL_RATIO:.0f}× the naive deployment-per-task baseline: "
        f"{verdict(ratio is not None and ratio >= GOAL_RATIO)} (measured "
        f"{'–' if ratio is None else f'{ratio:,.1f}×'}: {tasks_per_s:,.1f} tasks/s against "
        f"{naive.get('runs_per_s', 0):.2f} runs/s)",
        lag_line(orch),
    ]
    return lines


def short_of(measured: float, goal: float) -> str:
    return "" if measured >= goal else f", {measured / goal:.0%} of the goal"


def lag_line(orch: dict[str, Any]) -> str:
    idle, load = orch["idle"]["prefect"], orch["load"]["prefect"]
    bounded = idle["lag_s"] is not None and load["lag_s"] is not None
    if not bounded:
        stuck = load if load["lag_s"] is None else idle
        return (f"- Prefect recording lag bounded: FAIL (the server had recorded {stuck['recorded']:,} of "
                f"{stuck['expected']:,} ORCH task runs {LAG_TIMEOUT:.0f} s after the last one finished)")
    grows = load["lag_s"] > idle["lag_s"] + 1.0
    backlog = max((s["orch_done"] - s["prefect_final"] for s in orch["load"]["samples"]), default=0)
    trend = (f"it grows with the burst ({idle['lag_s']:.1f} s after the {orch['idle']['tasks']} idle tasks, "
             f"{load['lag_s']:.1f} s after the {orch['load']['completed']:,}-task burst)" if grows else
             f"it does not grow with the burst ({idle['lag_s']:.1f} s after the {orch['idle']['tasks']} idle tasks, "
             f"{load['lag_s']:.1f} s after the {orch['load']['completed']:,}-task burst)")
    return (f"- Prefect recording lag bounded: PASS (all {load['expected']:,} task runs recorded final "
            f"{load['lag_s']:.1f} s after the last ORCH task finished; {trend}; largest backlog during the "
            f"burst {backlog:,} task runs)")


def markdown(report: dict[str, Any]) -> str:
    """The user's path first (what users meet), then the in-process ceiling when it was measured."""
    return "\n".join([user_path_markdown(report), *([in_process_markdown(report)] if "accept" in report else [])])


def _stack_cell(stacks: dict[str, Any], name: str, read: Callable[[dict[str, Any]], str]) -> str:
    return read(stacks[name]) if name in stacks else "–"


def user_path_markdown(report: dict[str, Any]) -> str:
    machine, stacks, celery = report["machine"], report["user_path"], report["celery"]
    accept, load = report.get("accept"), report.get("orch", {}).get("load")
    inproc_cpu = (f"dispatcher {1000 * load['cpu_s']['dispatcher'] / max(1, load['completed']):.1f}, Prefect server "
                  f"{1000 * load['cpu_s']['prefect_server'] / max(1, load['completed']):.1f}") if load else "–"

    def cpu(part: str, decimals: int) -> Callable[[dict[str, Any]], str]:
        def cell(stack: dict[str, Any]) -> str:
            per = stack[part].get("cpu_ms_per_task")
            if not per:
                return "–"
            machine = f"; whole machine {per['machine']:.{decimals}f}" if "machine" in per else ""
            return (f"API {per['orch api']:.{decimals}f}, worker {per['worker']:.{decimals}f}, Prefect server "
                    f"{per['prefect server']:.{decimals}f}{machine}")
        return cell

    def refused(answers: dict[str, int]) -> str:
        other = {k: v for k, v in answers.items() if k != "202"}
        return ", ".join(f"{v:,}× {k}" for k, v in sorted(other.items())) or "none"

    rows = [
        (f"single `POST /dispatch` accepted/s ({STACK_CLIENTS} clients, dispatcher running)",
         lambda s: fmt(s["single"]["accepted_per_s"]), spread_cell(accept["single_per_s"]) + " (one caller, "
         "no dispatcher)" if accept else "–", fmt(celery["accepted_per_s"]) + " (`.delay()`)"),
        (f"`POST /dispatch/batch` of {STACK_BATCH}: tasks accepted/s ({STACK_CLIENTS} clients)",
         lambda s: fmt(s["batch"]["accepted_tasks_per_s"]),
         spread_cell(accept["batched_per_s"]) + f" (batches of {report['sizes']['batch']})" if accept else "–", "–"),
        ("single `POST /dispatch` latency p50 / p95 / p99 (ms)", lambda s: pct_cell(s["single"]["latency_ms"]), "–",
         pct_cell(celery["delay_latency_ms"])),
        ("answers other than 202 (single; batch)",
         lambda s: f"{refused(s['single']['statuses'])}; {refused(s['batch']['statuses'])}", "–", "–"),
        (f"end to end, first request → all final: no-op tasks/s ({report['sizes']['http_single']:,} tasks)",
         lambda s: fmt(s["single"]["tasks_per_s"], 1), fmt(load["tasks_per_s"], 1) if load else "–",
         fmt(celery["tasks_per_s"], 1)),
        ("first request → all final (s)", lambda s: fmt(s["single"]["end_to_end_s"], 1),
         fmt(load["first_created_to_last_finished_s"], 1) if load else "–", fmt(celery["end_to_end_s"], 1)),
        ("CPU ms per task, end-to-end run", cpu("single", 1), inproc_cpu,
         f"worker {celery['worker_cpu_ms_per_task']:.1f}"),
        ("CPU ms per task accepted, batches (the dispatcher running what they queued)", cpu("batch", 3), "–", "–"),
        ("Prefect has recorded all task runs final, after the last finished (s)",
         lambda s: fmt(s["single"]["prefect_lag_s"], 1), fmt(load["prefect"]["lag_s"], 1) if load else "–", "–"),
        ("load average (1 min) after the run", lambda s: fmt(s["single"]["load_avg_1m"], 2), "–",
         fmt(celery["load_avg_1m"], 2)),
    ]
    names = [n for n in ("sqlite", "postgresql") if n in stacks]
    header = ["| figure | " + " | ".join(f"`orch up`, {n}" for n in names)
              + " | in process (ceiling) | Celery 5 + Redis |", "|---|" + "---|" * (len(names) + 2)]
    body = ["| " + " | ".join([label, *(_stack_cell(stacks, n, read) for n in names), ceiling, peer]) + " |"
            for label, read, ceiling, peer in rows]
    goals = []
    for name in names:
        single, batch = stacks[name]["single"], stacks[name]["batch"]
        goals.append(f"- {name}: single {fmt(single['accepted_per_s'])}/s (goal ≥ {GOAL_ACCEPT_SINGLE:,.0f}: "
                     f"{verdict(single['accepted_per_s'] >= GOAL_ACCEPT_SINGLE)}), batched "
                     f"{fmt(batch['accepted_tasks_per_s'])}/s (goal ≥ {GOAL_ACCEPT_BATCHED:,.0f}: "
                     f"{verdict(batch['accepted_tasks_per_s'] >= GOAL_ACCEPT_BATCHED)}), end to end "
                     f"{fmt(single['tasks_per_s'], 1)} tasks/s (goal ≥ {GOAL_TASKS_PER_S:.0f}: "
                     f"{verdict(single['tasks_per_s'] >= GOAL_TASKS_PER_S)})")
    git = machine["git"]
    return "\n".join([
        "# ORCH-Next dispatch benchmark", "",
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, Prefect {machine['prefect']}, "
        f"{machine['timestamp']}, load average {machine['load_avg_1m']} at start and "
        f"{machine.get('load_avg_1m_end', '–')} at the end, code at {git['commit']}"
        + (f" plus uncommitted changes to {len(git['uncommitted'])} files (listed in the JSON)"
           if git["uncommitted"] else "") + ".", "",
        "## The user's path: a running `orch up`, dispatches over HTTP", "",
        f"A fresh `orch up` per database (its own Prefect server, API, worker with the dispatcher), one admin made "
        f"with `orch user create-admin`, its bearer token on {STACK_CLIENTS} keep-alive connections; no-op tasks "
        f"over {report['sizes']['cores']} cores, read back through `GET /tasks`. The single dispatches run to "
        "the end (end to end, CPU per task: each process with its children, from before the first request "
        "until the Prefect server has recorded every task run final); the batches run after them, accept "
        "rate only. Celery: one worker (prefork, a process per CPU), Redis as broker and result backend, "
        f"{STACK_CLIENTS} threads calling `.delay()`. The stacks share one Prefect server started as `orch up` "
        "starts its own (its argv and environment), found through `PREFECT_API_URL`: `orch up` gives a component "
        "120 s to become healthy, which a Prefect server on a busy shared machine can exceed."
        + (f" The stacks ran from the source copy `{report['stack_tree']}`." if report.get("stack_tree") else ""),
        "", *header, *body, "", "Goals:", *goals, ""])


def in_process_markdown(report: dict[str, Any]) -> str:
    machine, sizes, accept, orch = report["machine"], report["sizes"], report["accept"], report["orch"]
    naive, bg = report["naive"], report["background"]
    idle, load = orch["idle"], orch["load"]
    settings = orch["settings"]
    rows = [
        ("accept, one at a time (dispatches/s)", spread_cell(accept["single_per_s"]), "–", "–"),
        (f"accept, batches of {sizes['batch']} (dispatches/s)", spread_cell(accept["batched_per_s"]), "–", "–"),
        ("submit rate while measuring (per s)", f"{fmt(load['tasks'] / max(load['enqueue_s'], 1e-6))} (burst, batched)",
         fmt(naive["submit_per_s"], 1), fmt(bg["submit_per_s"], 1)),
        ("submit→start at idle, p50 / p95 / p99 (ms)", pct_cell(idle["submit_to_start_ms"]), "–", "–"),
        ("tasks measured under load", f"{load['tasks']:,}" + (" (cut off)" if load["cut_off"] else ""),
         f"{naive['runs']:,}", f"{bg['tasks']:,}"),
        ("end to end (tasks/s)", fmt(load["tasks_per_s"], 1), fmt(naive["runs_per_s"], 2), fmt(bg["tasks_per_s"], 1)),
        ("first submit → last done (s)", fmt(load["first_created_to_last_finished_s"], 1),
         fmt(naive["first_submit_to_last_end_s"], 1), fmt(bg["first_submit_to_all_results_s"], 1)),
        ("submit→start under load, p50 / p95 / p99 (ms)", pct_cell(load["submit_to_start_ms"]),
         pct_cell(naive["submit_to_start_ms"]), pct_cell(bg["submit_to_start_ms"])),
        ("submit→finish under load, p50 / p95 / p99 (ms)", pct_cell(load["submit_to_finish_ms"]),
         pct_cell(naive["submit_to_finish_ms"]), pct_cell(bg["submit_to_finish_ms"])),
        ("start→finish of a no-op under load, p50 / p95 / p99 (ms)", pct_cell(load["start_to_finish_ms"]), "–", "–"),
        ("Prefect has recorded all task runs final, after the last finished (s)",
         f"{fmt(load['prefect']['lag_s'], 1)} (idle phase: {fmt(idle['prefect']['lag_s'], 1)})", "– (flow runs)",
         "– (results read back)"),
    ]
    header = ["| figure | " + " | ".join(SCENARIOS.values()) + " |", "|---|" + "---|" * len(SCENARIOS)]
    body = ["| " + " | ".join(row) + " |" for row in rows]
    stop = orch.get("stop", {})
    return "\n".join([
        "## In process: the queue and the dispatcher service fed directly (the ceiling)", "",
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, Prefect {machine['prefect']}, "
        f"{machine['timestamp']}, load average at start {machine['load_avg_1m']}, code at "
        f"{machine['git']['commit']}"
        + (f" plus uncommitted changes to {', '.join(machine['git']['uncommitted'])}" if machine["git"]["uncommitted"]
           else "") + ".",
        f"SQLite ORCH database (fresh per scenario); one Prefect server started for the run with "
        f"{', '.join(f'`{k}={v}`' for k, v in report['prefect_server_env'].items())} (what `orch up` sets). "
        f"Dispatcher: one `python -m orch.dispatch.service`, concurrency {settings['concurrency']}, poll "
        f"{settings['poll_seconds']} s, tasks spread over {settings['cores']} cores (core concurrency "
        f"{settings['core_concurrency']}). Naive: process work pool, worker polling every "
        f"{naive['worker_query_seconds']:.0f} s. Cells: median (min–max) of {report['runs']} accept runs; "
        "latencies over every task of the phase.", "",
        *header, *body, "", *goal_lines(report), "",
        "Where the time went during the burst: "
        f"Prefect server {load['cpu_s']['prefect_server']:.0f} CPU-s, dispatcher {load['cpu_s']['dispatcher']:.0f} "
        f"CPU-s in {load['wall_s']:.0f} s wall on {machine['cpu_count']} CPUs; dispatcher threads "
        f"{load['dispatcher_threads']['before']} → {load['dispatcher_threads']['after']}, RSS "
        f"{load['dispatcher_rss_mb']['before']:.0f} → {load['dispatcher_rss_mb']['after']:.0f} MB "
        f"({per_task(load, 'dispatcher_threads'):+.2f} threads and {per_task(load, 'dispatcher_rss_mb'):+.2f} MB "
        "per completed task). "
        f"Accept, one at a time: {accept['single_first_tenth_per_s']['median']:,.0f}/s over the first tenth, "
        f"{accept['single_last_tenth_per_s']['median']:,.0f}/s over the last (queue depth 0 → {sizes['single']:,}).",
        f"Dispatcher stop (SIGTERM, as a service manager stops it): exit code {stop.get('exit_code')} in "
        f"{stop.get('seconds')} s, {stop.get('left_running')} ORCH task(s) left running"
        + ("; the dispatch flow run ended Crashed" if stop.get("log_says_crashed") else "") + ".",
        f"Ready before measuring (s after start, warm-up included): dispatcher {orch['ready_s']:.1f}, "
        f"naive pool+deployment+worker {naive['ready_s']:.1f}, task worker {bg['ready_s']:.1f}; "
        f"Prefect server {report['prefect_server_ready_s']:.1f}.", ""])


def per_task(load: dict[str, Any], figure: str) -> float:
    """How much a dispatcher figure (threads, RSS) grew per task completed during the burst."""
    return (load[figure]["after"] - load[figure]["before"]) / max(1, load["completed"])


def write_report(report: dict[str, Any], out: Path) -> str:
    table = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_dispatch.md").write_text(table, encoding="utf-8")
    (out / "bench_dispatch.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return table


# --- main ----------------------------------------------------------------------------------------

def _terminated(signum: int, _frame: object) -> None:
    raise BenchError(f"interrupted by signal {signum}")


def bench(workdir: Path, sizes: Sizes, runs: int, concurrency: int | None, parts: str,
          databases: list[str], tree: Path | None) -> dict[str, Any]:
    machine = machine_info()
    report: dict[str, Any] = {"machine": machine, "sizes": asdict(sizes), "runs": runs, "parts": parts,
                              "stack_tree": str(tree) if tree else None,
                              "goals": {"accept_single_per_s": GOAL_ACCEPT_SINGLE,
                                        "accept_batched_per_s": GOAL_ACCEPT_BATCHED,
                                        "idle_submit_to_start_p50_ms": GOAL_IDLE_P50_MS,
                                        "tasks_per_s": GOAL_TASKS_PER_S, "ratio_to_naive": GOAL_RATIO}}
    procs = Processes(workdir / "logs")
    procs.log_dir.mkdir()
    try:
        report["user_path"] = run_user_path(workdir, sizes, databases, tree, procs)
        say("(e) peer baseline: Celery with Redis")
        report["celery"] = run_celery(workdir, sizes, procs)
        if parts == "all":
            say("(a1) accept rate, no dispatcher running")
            report["accept"] = run_accept(workdir, sizes, runs)
            in_process(workdir, sizes, concurrency, procs, report)
    finally:
        procs.stop_all()
    report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    return report


def in_process(workdir: Path, sizes: Sizes, concurrency: int | None, procs: Processes, report: dict[str, Any]) -> None:
    """(a2)-(c): a Prefect server of its own, the dispatcher service fed directly, and Prefect's two ways."""
    prefect = Prefect(workdir / "prefect", procs)
    prefect.home.mkdir()
    report["prefect_server_env"] = prefect.tuning
    prefect.start()
    report["prefect_server_ready_s"] = prefect.started_s
    # This process is a Prefect client too from here on (run_deployment, .delay()).
    os.environ.update({"PREFECT_API_URL": prefect.api, "PREFECT_HOME": str(prefect.home),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"})
    say("(a2-a4) ORCH dispatcher: idle latency, burst, Prefect recording lag")
    report["orch"] = run_orch(workdir, sizes, prefect, procs, concurrency)
    say("(b) naive: one run_deployment per task")
    report["naive"] = run_naive(workdir, sizes, prefect, procs)
    say("(c) Prefect background tasks")
    report["background"] = run_background(workdir, sizes, prefect, procs)
    report["prefect_server_end"] = dict(zip(("rss_mb", "cpu_s"), prefect.rss_cpu(), strict=True))
    prefect.client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="accept-rate repetitions (default 3)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="report directory")
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts (about 3 minutes)")
    parser.add_argument("--burst", type=int, help="no-op tasks in the load burst")
    parser.add_argument("--load-timeout", type=float, help="seconds before the burst is cut off")
    parser.add_argument("--parts", choices=("all", "user-path"), default="all",
                        help="user-path: only the `orch up` stacks and Celery, without the in-process ceiling")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="the stacks' ORCH databases, comma-separated (default sqlite,postgresql)")
    parser.add_argument("--tree", type=Path, help="run the `orch up` stacks from this copy of the source tree (a "
                        "baseline while this one is being changed); the in-process parts run from this one")
    parser.add_argument("--single", type=int, help="single dispatches sent over HTTP on the user's path "
                        "(default 1,000): more of them make each core's backlog longer")
    parser.add_argument("--cores", type=int, help="spread the tasks over this many cores (default 64); with few, "
                        "each core's backlog is long, as with an operator's handful of cores")
    parser.add_argument("--concurrency", type=int,
                        help="dispatcher concurrency (ORCH_DISPATCH__CONCURRENCY; default: ORCH's default)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not (BIN / "prefect").is_file():
        parser.error(f"prefect not found next to {sys.executable}; run it with the project's venv")
    sizes = QUICK if args.quick else DEFAULT
    if args.burst is not None:
        if args.burst < 1:
            parser.error("--burst must be at least 1")
        sizes = replace(sizes, burst=args.burst)
    if args.load_timeout is not None:
        sizes = replace(sizes, load_timeout_s=args.load_timeout)
    if args.single is not None:
        if args.single < 1:
            parser.error("--single must be at least 1")
        sizes = replace(sizes, http_single=args.single)
    if args.cores is not None:
        if args.cores < 1:
            parser.error("--cores must be at least 1")
        sizes = replace(sizes, cores=args.cores)
    if args.concurrency is not None and not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be 1-64 (dispatch.concurrency's range)")
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    if not databases or set(databases) - {"sqlite", "postgresql"}:
        parser.error("--databases: sqlite and/or postgresql")

    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    signal.signal(signal.SIGTERM, _terminated)
    return run_bench("orch-bench-dispatch-",
                     lambda workdir: bench(workdir, sizes, args.runs, args.concurrency, args.parts, databases,
                                           args.tree.resolve() if args.tree else None),
                     lambda report: write_report(report, args.out))



def machine_info() -> dict[str, object]:
    return {**_machine_info(), "git": git_state()}


if __name__ == "__main__":
    sys.exit(main())
