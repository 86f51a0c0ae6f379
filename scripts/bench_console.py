"""Console benchmark: the ORCH console (``/ui/``) over a million tasks, beside the bare API routes.

Why it exists: issue 16 promises a console that stays fast with history, which is where its peers' users
complain most. With 1,000,000 tasks in SQLite: overview and first task page p95 server time < 50 ms each,
a filtered task page p95 < 100 ms, first contentful paint of the overview in Chromium < 500 ms, and the
tasks page keeping up with 100 task events/s (lag p95 < 1 s). Measured on the path users take: ``python -m
orch.api.server`` as a process over a real SQLite file, real sockets on loopback, Debian's Chromium.

In one invocation:

(a) a database at the migrations' head (``orch.storage.migrate.upgrade``) seeded with N tasks over the
    last 30 days (mostly completed, some failed/cancelled/timed out, queued and running ones among the
    newest; 10 cores, a few actions and owners) and each task's events (created, started, ended), so the
    file's size is what that history costs; the seeded file is cached under ``<out>/console-db/`` by
    schema revision, row count and seed version (``--reseed`` makes it again);
(b) server time, one request at a time on one keep-alive loopback connection after a warm-up, as an
    admin's browser session (cookie from the login form) asks for pages: ``/ui/``, ``/ui/tasks``,
    ``/ui/tasks?status=failed&core_id=...``, a page 50 cursors deep, the fragments the pages fetch
    live, and (a tenth as many requests) three filters no index of the schema serves in order: an owner,
    an action that matches nothing, a rare status on one core; baselines: the JSON ``GET /tasks?limit=50``
    (bearer token) with the same filters, ``GET /health?detailed=true`` and ``GET /healthz``. Client
    figures are the full response time seen by the client; the server's own figure is the ``duration_ms``
    of its access log line (``AccessLogMiddleware``), and its CPU per request;
(c) the SQL behind each page run in this process against the same file, each statement timed and its
    ``EXPLAIN QUERY PLAN`` kept, so a slow page names its slow query;
(d) first contentful paint of the overview in Chromium (logged in through the form), N loads; baseline
    ``/docs`` (Swagger UI from local assets) in the same browser;
(e) live-update lag: the tasks page open while ``POST /dispatch`` runs at 100/s (open loop, bearer token);
    a MutationObserver injected by Playwright records ``Date.now()`` when each task's row appears, the
    client records ``Date.now()``-equivalent (``time.time()``) when each dispatch was acknowledged;
(f) one screenshot per console page under ``<out>/console-screens/``.

Usage: ``.venv/bin/python scripts/bench_console.py [--quick] [--reseed] [--out DIR]``. Needs Chromium at
/usr/bin/chromium (never downloaded). Progress goes to stderr, the markdown table to stdout and
``<out>/bench_console.md``, every figure to ``<out>/bench_console.json``. ``--quick`` is a smoke run:
50,000 tasks and fewer requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bench_api import ADMIN, BIN, PASSWORD, Server, orch_env, run_cli, start, with_cpu
from bench_common import BenchError, run_bench
from bench_common import machine_info as _machine_info
from bench_dispatch import Processes, fmt, free_port, git_state, percentiles, say, verdict

CHROMIUM = "/usr/bin/chromium"
SEED_VERSION = 1  # raise when the seeded data changes, so cached files are not reused
CORES = [f"WORK_AI_{n:02d}" for n in range(1, 11)]
OWNERS = [("ops-scheduler", 50), ("ci-pipeline", 25), ("alice", 10), ("oscar", 10), ("core-a", 5)]
ENDED = [("completed", 930), ("failed", 40), ("cancelled", 20), ("timed_out", 10)]
RECENT_QUEUED = 0.4  # share of the last two hours' tasks still queued (nothing runs them here)
HISTORY = timedelta(days=30)
CHUNK = 50_000
GOAL_OVERVIEW_P95_MS = 50.0
GOAL_TASKS_P95_MS = 50.0
GOAL_FILTERED_P95_MS = 100.0
GOAL_FCP_MS = 500.0
GOAL_LAG_P95_MS = 1000.0
GOAL_GB_PER_MILLION = 10.0
DEEP_PAGES = 50
# Filtered pages whose rows no index of today's schema finds in order: (label, query string).
HARD_FILTERS = {"tasks_owner": ("`/ui/tasks?owner=ops-scheduler` (half the tasks)", "owner=ops-scheduler"),
                "tasks_action_none": ("`/ui/tasks?action=external` (no such task)", "action=external"),
                "tasks_rare_on_core": ("`/ui/tasks?status=running&core_id=…` (rare status on a core)",
                                       "status=running&core_id={core}")}
LIVE_CONNECTIONS = 8
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite


@dataclass(frozen=True)
class Sizes:
    tasks: int
    requests: int  # timed requests per route
    warmup: int
    fcp_loads: int
    live_rate: float  # dispatches per second
    live_seconds: float


DEFAULT = Sizes(tasks=1_000_000, requests=200, warmup=20, fcp_loads=10, live_rate=100, live_seconds=20)
QUICK = Sizes(tasks=50_000, requests=40, warmup=5, fcp_loads=4, live_rate=100, live_seconds=6)


# --- (a) the seeded database ---------------------------------------------------------------------

def _actions(rng: random.Random) -> tuple[str, str, int]:
    """An action, its params as stored (JSON text) and its timeout."""
    pick = rng.random()
    if pick < 0.55:
        script = rng.choice(["backup_ai.ps1", "sync_models.sh", "collect_logs.sh", "rotate_keys.sh"])
        return "shell", json.dumps({"command": f"scripts/{script} --target {rng.randrange(1, 40)}"}), 600
    if pick < 0.80:
        return "http", json.dumps({"url": f"http://10.0.{rng.randrange(0, 8)}.{rng.randrange(2, 250)}:8080/"
                                          f"jobs/{rng.randrange(1, 999)}", "method": "POST"}), 120
    if pick < 0.92:
        return "run-deployment", json.dumps({"deployment": "backup/nightly", "parameters": {"verify": True}}), 3600
    if pick < 0.97:
        return "sleep", json.dumps({"seconds": rng.randrange(1, 30)}), 60
    return "noop", "{}", 60


def _weighted(rng: random.Random, table: list[tuple[str, int]]) -> str:
    names, weights = zip(*table, strict=True)
    return rng.choices(names, weights)[0]


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(SQLITE_TIME)


def seed_rows(rows: int, now: float, seed: int = 16) -> Any:
    """Yield (task rows, event rows) chunks: tasks oldest first, created_at spread evenly over 30 days
    with jitter (so strictly increasing), each with its events as the dispatcher would have written."""
    rng = random.Random(seed)
    start = now - HISTORY.total_seconds()
    step = (HISTORY.total_seconds() - 60) / rows
    recent = now - 7200
    running_left = set(CORES)
    tasks: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    for n in range(rows):
        created = start + n * step + rng.random() * step * 0.9
        core = rng.choice(CORES)
        action, params, timeout = _actions(rng)
        owner = _weighted(rng, OWNERS)
        priority = rng.choices((0, 1, 2, 3), (10, 70, 15, 5))[0]
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        status = _weighted(rng, ENDED)
        if created > recent:
            if core in running_left and created > now - 600:
                status = "running"
                running_left.discard(core)
            elif rng.random() < RECENT_QUEUED:
                status = "queued"
        started = finished = lease_owner = lease_expires = result = error = None
        attempts = 0
        c_at = _stamp(created)
        created_data = json.dumps({"core_id": core, "action": action,
                                   "priority": ("low", "normal", "high", "critical")[priority],
                                   "timeout": timeout, "metadata": {}, "owner": owner})
        events.append((task_id, "task.created", c_at, created_data))
        if status in ("completed", "failed", "timed_out", "running"):
            attempts = 1
            started = min(created + 0.2 + rng.random() * 3, now - 2)
            events.append((task_id, "task.started", _stamp(started),
                           json.dumps({"attempt": 1, "dispatcher": f"dispatcher-{rng.randrange(1, 3)}"})))
            if status == "running":
                lease_owner, lease_expires = "dispatcher-1", _stamp(now + 86_400)
            else:
                duration = timeout if status == "timed_out" else rng.random() * 90 + 0.5
                finished = min(started + duration, now - 1)
                data: dict[str, Any] = {"attempts": 1, "duration": round(finished - started, 3)}
                if status == "completed":
                    result = json.dumps({"exit_code": 0, "stdout": "done\n", "duration": data["duration"]})
                else:
                    error = ("exit code 1: connection refused by 10.0.3.17:8080" if status == "failed"
                             else f"timed out after {timeout} s")
                    data["error"] = error
                events.append((task_id, f"task.{status}", _stamp(finished), json.dumps(data)))
        elif status == "cancelled":
            finished = created + rng.random() * 60
            events.append((task_id, "task.cancelled", _stamp(finished), json.dumps({"by": "oscar", "was": "queued"})))
        updated = finished or started or created
        tasks.append((task_id, core, action, params, priority, timeout, 0, "{}", owner, None, 0, "[]",
                      created - priority * 60, lease_owner, lease_expires, status, attempts, result, error,
                      c_at, _stamp(started) if started else None, _stamp(finished) if finished else None,
                      _stamp(updated)))
        if len(tasks) >= CHUNK:
            yield tasks, events
            tasks, events = [], []
    if tasks:
        yield tasks, events


TASK_COLUMNS = ("task_id, core_id, action, params, priority, timeout, stay, metadata, owner, idempotency_key, "
                "max_retries, locks, sort_key, lease_owner, lease_expires_at, status, attempts, result, error, "
                "created_at, started_at, finished_at, updated_at")


def seed(path: Path, rows: int) -> dict[str, Any]:
    """Migrations to head, then the rows in large transactions with the secondary indexes dropped and
    made again afterwards (their SQL read from the schema the migrations made, so they are the same)."""
    from orch.config.schema import DatabaseSettings
    from orch.storage.engine import get_engine
    from orch.storage.migrate import upgrade

    began = time.monotonic()
    database = DatabaseSettings(url=f"sqlite:///{path}")
    upgrade(database, create_database=True)
    get_engine(database).dispose()
    migrated_s = time.monotonic() - began
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-262144")  # 256 MB: the primary key of random uuids stays in memory
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "
                             "AND tbl_name IN ('tasks', 'task_events')").fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        done, events = 0, 0
        task_sql = f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * 23)})"
        event_sql = "INSERT INTO task_events (task_id, event_type, timestamp, data) VALUES (?, ?, ?, ?)"
        seeded_at = time.time()
        for task_rows, event_rows in seed_rows(rows, seeded_at):
            db.execute("BEGIN")
            db.executemany(task_sql, task_rows)
            db.executemany(event_sql, event_rows)
            db.execute("COMMIT")
            done += len(task_rows)
            events += len(event_rows)
            if done % 200_000 < CHUNK:
                say(f"    {done:,} tasks, {events:,} events ({time.monotonic() - began:.0f} s)")
        insert_s = time.monotonic() - began - migrated_s
        for _, sql in indexes:
            db.execute(sql)
        db.execute("PRAGMA journal_mode=WAL")  # what the API's engine sets anyway
    finally:
        db.close()
    seconds = time.monotonic() - began
    size = path.stat().st_size
    return {"tasks": rows, "events": events, "seeded_at": seeded_at, "seed_s": round(seconds, 1),
            "migrate_s": round(migrated_s, 1),
            "insert_s": round(insert_s, 1), "index_s": round(seconds - migrated_s - insert_s, 1),
            "size_bytes": size, "size_gb": round(size / 1e9, 3),
            "gb_per_million_tasks": round(size / 1e9 / rows * 1e6, 3),
            "tasks_per_s": round(rows / seconds)}


def bring_forward(path: Path, seeded_at: float, window: float = 7200) -> dict[str, Any]:
    """Move the newest tasks (those of the last two hours at seeding time) and their events forward by the
    cache's age, in this copy: the overview's throughput reads the last hour's events and the running
    tasks' leases must not have expired, so a cached file must look as if seeded just now."""
    age = time.time() - seeded_at
    if age < 60:
        return {"moved_s": 0.0, "tasks": 0}

    def later(value: str | None) -> str | None:
        if value is None:
            return None
        return _stamp(datetime.strptime(value, SQLITE_TIME).replace(tzinfo=UTC).timestamp() + age)

    db = sqlite3.connect(path, isolation_level=None)
    try:
        cutoff = _stamp(seeded_at - window)
        tasks = db.execute("SELECT task_id, created_at, started_at, finished_at, updated_at, lease_expires_at "
                           "FROM tasks WHERE created_at >= ?", (cutoff,)).fetchall()
        events = db.execute("SELECT event_id, timestamp FROM task_events WHERE task_id IN "
                            "(SELECT task_id FROM tasks WHERE created_at >= ?)", (cutoff,)).fetchall()
        db.execute("BEGIN")
        db.executemany("UPDATE tasks SET created_at = ?, started_at = ?, finished_at = ?, updated_at = ?, "
                       "lease_expires_at = ?, sort_key = sort_key + ? WHERE task_id = ?",
                       [(*map(later, row[1:]), age, row[0]) for row in tasks])
        db.executemany("UPDATE task_events SET timestamp = ? WHERE event_id = ?",
                       [(later(stamp), event_id) for event_id, stamp in events])
        db.execute("COMMIT")
    finally:
        db.close()
    return {"moved_s": round(age, 1), "tasks": len(tasks), "events": len(events)}


def add_seed_arguments(parser: argparse.ArgumentParser, quick: str) -> None:
    """The options of the cached seeded database, shared by the benchmarks that read it."""
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="report directory")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: 50,000 tasks, {quick}")
    parser.add_argument("--tasks", type=int, help="tasks to seed (default 1,000,000; --quick 50,000)")
    parser.add_argument("--reseed", action="store_true", help="seed the database again even when cached")


def seeded_database(cache: Path, rows: int, reseed: bool) -> tuple[Path, dict[str, Any]]:
    """The cached seeded file for this schema and size, made when missing (or with ``--reseed``)."""
    from orch.storage.migrate import head_revision

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"orch-rev{head_revision()}-{rows}-v{SEED_VERSION}.db"
    facts = path.with_suffix(".json")
    if path.is_file() and facts.is_file() and not reseed:
        figures = json.loads(facts.read_text(encoding="utf-8"))
        say(f"(a) reusing {path} ({figures['size_gb']} GB, seeded in {figures['seed_s']} s)")
        return path, {**figures, "cached": True}
    for stale in cache.glob(f"orch-rev*-{rows}-v*.*"):
        stale.unlink()
    say(f"(a) seeding {rows:,} tasks into {path}")
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    figures = seed(building, rows)
    building.rename(path)
    facts.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    say(f"    seeded in {figures['seed_s']} s: {figures['size_gb']} GB ({figures['gb_per_million_tasks']} GB per "
        f"million tasks)")
    return path, {**figures, "cached": False}


# --- (b) server time -----------------------------------------------------------------------------

@dataclass
class Console:
    server: Server
    home: Path
    env: dict[str, str]
    token: str
    log: Path


def start_console(workdir: Path, procs: Processes, seeded: Path) -> Console:
    """The API over a copy of the seeded file (the cache stays pristine), one admin made by the CLI."""
    home = workdir / "orch"
    (home / "data").mkdir(parents=True)
    shutil.copyfile(seeded, home / "data" / "orch.db")
    facts = json.loads(seeded.with_suffix(".json").read_text(encoding="utf-8"))
    moved = bring_forward(home / "data" / "orch.db", facts.get("seeded_at", seeded.stat().st_mtime - facts["seed_s"]))
    if moved["tasks"]:
        say(f"    the cached file's newest {moved['tasks']:,} tasks moved {moved['moved_s']:.0f} s forward")
    port = free_port()
    env = orch_env(home, port)
    run_cli([str(BIN / "orch"), "user", "create-admin", "--username", ADMIN, "--password-stdin"], env, PASSWORD)
    server = start(procs, "orch-api", [sys.executable, "-m", "orch.api.server"], env, port, "/healthz")
    response = httpx.post(server.url + "/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=30)
    if response.status_code != 200:
        raise BenchError(f"POST /auth/token answered HTTP {response.status_code}: {response.text[:200]}")
    return Console(server, home, env, str(response.json()["access_token"]), home / "logs" / "orch-next.log")


def browser_session(console: Console) -> httpx.Client:
    """A client holding the session cookie the login form sets, asking for HTML as a browser does."""
    client = httpx.Client(base_url=console.server.url, timeout=60, headers={"Accept": "text/html"})
    response = client.post("/ui/login", data={"username": ADMIN, "password": PASSWORD, "next": "/ui/"},
                           headers={"Origin": console.server.url})
    if response.status_code != 303 or "orch_session" not in client.cookies:
        raise BenchError(f"POST /ui/login answered HTTP {response.status_code} without a session cookie")
    return client


def access_durations(log: Path, offset: int) -> list[tuple[str, int, float]]:
    """(path, status, duration_ms) of every access log line written after ``offset``."""
    found = []
    with log.open("rb") as handle:
        handle.seek(offset if offset <= log.stat().st_size else 0)  # rotated meanwhile: what is left
        for line in handle:
            if b'"http_request"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line[line.index(b"{"):])
                found.append((entry["path"], int(entry["status"]), float(entry["duration_ms"])))
    return found


def time_route(console: Console, client: httpx.Client, url: str, sizes: Sizes,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``url`` one request at a time on the client's keep-alive connection: warm-up, then timed ones."""
    for _ in range(sizes.warmup):
        response = client.get(url, headers=headers)
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered HTTP {response.status_code}: {response.text[:200]}")
    offset = console.log.stat().st_size
    latencies, statuses, size = [], Counter[str](), 0
    for _ in range(sizes.requests):
        began = time.perf_counter()
        response = client.get(url, headers=headers)
        latencies.append((time.perf_counter() - began) * 1000)
        statuses[str(response.status_code)] += 1
        size = len(response.content)
    time.sleep(0.3)  # the last access log line is written after the answer
    path = url.split("?", 1)[0]
    server = [ms for p, status, ms in access_durations(console.log, offset) if p == path and status == 200]
    return {"url": url, "client_ms": percentiles(latencies), "server_ms": percentiles(server[-sizes.requests:]),
            "statuses": dict(statuses), "response_bytes": size, "sent": sizes.warmup + sizes.requests}


def deep_cursor(client: httpx.Client, bearer: dict[str, str], pages: int) -> str:
    """The cursor of page ``pages + 1`` of the unfiltered list, followed page by page through the API."""
    cursor = None
    for _ in range(pages):
        response = client.get("/tasks", params={"limit": 50, **({"cursor": cursor} if cursor else {})},
                              headers=bearer)
        cursor = response.json().get("next_cursor") if response.status_code == 200 else None
        if not cursor:
            raise BenchError(f"GET /tasks did not give a next cursor (HTTP {response.status_code})")
    return cursor


def server_times(console: Console, sizes: Sizes, core: str) -> dict[str, Any]:
    bearer = {"Authorization": f"Bearer {console.token}", "Accept": "application/json"}
    filtered = f"status=failed&core_id={core}"
    results: dict[str, Any] = {}
    client = browser_session(console)
    with contextlib.closing(client):
        cursor = deep_cursor(client, bearer, DEEP_PAGES)
        routes = [("overview", "/ui/", None), ("overview_live", "/ui/overview/live", None),
                  ("tasks", "/ui/tasks", None), ("tasks_rows", "/ui/tasks/rows", None),
                  ("tasks_filtered", f"/ui/tasks?{filtered}", None),
                  ("tasks_deep", f"/ui/tasks?cursor={cursor}", None),
                  ("api_tasks", "/tasks?limit=50", bearer),
                  ("api_tasks_filtered", f"/tasks?limit=50&{filtered}", bearer),
                  ("api_tasks_deep", f"/tasks?limit=50&cursor={cursor}", bearer),
                  ("api_health_detailed", "/health?detailed=true", bearer), ("healthz", "/healthz", None)]
        for name, url, headers in routes:
            say(f"    {url[:70]}")
            results[name] = with_cpu(console.server, lambda u=url, h=headers: time_route(console, client, u, sizes, h))
        fewer = replace(sizes, requests=max(10, sizes.requests // 10), warmup=2)
        for name, (_, query) in HARD_FILTERS.items():
            url = f"/ui/tasks?{query.format(core=core)}"
            say(f"    {url[:70]} ({fewer.requests} requests: a filter no index serves)")
            results[name] = with_cpu(console.server, lambda u=url: time_route(console, client, u, fewer))
    for figures in results.values():  # CPU per request: the figure a busy shared machine does not inflate
        figures["server_cpu_ms_per_request"] = round(figures["server_cpu_s"] * 1000 / figures["sent"], 1)
    results["deep_pages"] = DEEP_PAGES
    return results


# --- (c) the SQL behind the pages ----------------------------------------------------------------

def section_times(settings: Any, calls: dict[str, Any]) -> dict[str, Any]:
    """Each data function of the pages on its own, warm, median of 5 (ms): where a page's time goes."""
    from statistics import median

    from orch.backup.catalog_view import backups_overview
    from orch.monitoring.alerts import list_alerts
    from orch.monitoring.healing import list_runs
    from orch.supply_chain.status import supply_chain_overview

    sections = {**calls, "overview alerts firing": lambda: list_alerts(settings, state="firing"),
                "overview last heal": lambda: list_runs(settings, None, 1),
                "overview backups": lambda: backups_overview(settings),
                "overview supply chain": lambda: supply_chain_overview(settings)}
    figures = {}
    for name, call in sections.items():
        call()
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            call()
            timings.append((time.perf_counter() - began) * 1000)
        figures[name] = round(median(timings), 2)
    return figures


def query_plans(console: Console, core: str) -> dict[str, Any]:
    """Each page's data functions run here against the same file; every statement they issue timed (best
    of 3) and explained, so a slow page names the statement that makes it slow."""
    from sqlalchemy import event

    from orch.config.loader import load_settings
    from orch.dispatch.cores_view import cores_overview
    from orch.dispatch.queue import TaskQueue
    from orch.dispatch.stats import queue_figures, throughput
    from orch.dispatch.task_filter import TaskFilter
    from orch.storage.engine import get_engine

    settings = load_settings(environ=console.env, generate_secrets=False)
    engine = get_engine(settings.database)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        captured.append((statement, parameters))

    queue = TaskQueue(settings)
    cursor = None
    for _ in range(DEEP_PAGES):
        cursor = queue.page(TaskFilter(), 50, cursor)[1]
    calls = {"tasks first page": lambda: queue.page(TaskFilter(), 50),
             "tasks filtered page": lambda: queue.page(TaskFilter(status="failed", core_id=core), 50),
             "tasks deep page": lambda: queue.page(TaskFilter(), 50, cursor),
             "tasks owner filter": lambda: queue.page(TaskFilter(owner="ops-scheduler"), 50),
             "tasks action filter (no match)": lambda: queue.page(TaskFilter(action="external"), 50),
             "tasks rare status on a core": lambda: queue.page(TaskFilter(status="running", core_id=core), 50),
             "overview throughput": lambda: throughput(settings),
             "overview queue figures": lambda: queue_figures(settings),
             "overview cores": lambda: cores_overview(settings)}
    plans: dict[str, Any] = {"sections_ms": section_times(settings, calls)}
    raw = sqlite3.connect(f"file:{console.home / 'data' / 'orch.db'}?mode=ro", uri=True)
    try:
        for name, call in calls.items():
            event.listen(engine, "before_cursor_execute", capture)
            call()
            event.remove(engine, "before_cursor_execute", capture)
            statements = []
            for sql, params in captured:
                if not sql.lstrip().upper().startswith("SELECT"):
                    continue
                timings = []
                for _ in range(3):
                    began = time.perf_counter()
                    raw.execute(sql, params).fetchall()
                    timings.append((time.perf_counter() - began) * 1000)
                plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                statements.append({"sql": " ".join(sql.split()), "ms": round(min(timings), 2), "plan": plan})
            captured.clear()
            plans[name] = {"call_ms": plans["sections_ms"][name], "statements": statements}
    finally:
        raw.close()
        engine.dispose()
    return plans


# --- (d, e, f) the browser -----------------------------------------------------------------------

FCP_JS = """() => new Promise((resolve) => {
  const nav = performance.getEntriesByType("navigation")[0];
  const done = (fcp) => resolve({fcp, ttfb: nav ? nav.responseStart : null,
                                 dcl: nav ? nav.domContentLoadedEventEnd : null, load: nav ? nav.loadEventEnd : null});
  const found = performance.getEntriesByName("first-contentful-paint")[0];
  if (found) return done(found.startTime);
  new PerformanceObserver((list) => {
    const entry = list.getEntriesByName("first-contentful-paint")[0];
    if (entry) done(entry.startTime);
  }).observe({type: "paint", buffered: true});
  setTimeout(() => done(null), 5000);
})"""

OBSERVE_JS = """() => {
  window.__benchSeen = {};
  const note = (node, now) => {
    if (node.nodeType !== 1) return;
    const rows = node.matches("tr[data-task-id]") ? [node] : node.querySelectorAll("tr[data-task-id]");
    for (const row of rows) {
      const id = row.dataset.taskId;
      if (!(id in window.__benchSeen)) window.__benchSeen[id] = now;
    }
  };
  new MutationObserver((mutations) => {
    const now = Date.now();
    for (const m of mutations) for (const node of m.addedNodes) note(node, now);
  }).observe(document.getElementById("task-rows"), {childList: true, subtree: true});
  return Date.now();
}"""


def log_in(page: Any, console: Console) -> str | None:
    """Log in through the form. When the browser's login is refused, the session cookie of the same form
    posted without a browser is given to the browser instead, so the rest can still be measured; returns
    why the form login failed (None when it worked)."""
    url = console.server.url
    page.goto(url + "/ui/login?next=/ui/")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    with page.expect_navigation(timeout=60_000):
        page.click("button[type=submit]")
    if page.url == url + "/ui/":
        return None
    alert = page.locator("[role=alert]")
    problem = alert.first.inner_text() if alert.count() else f"ended on {page.url}"
    say(f"    the browser's form login was refused ({problem.strip()[:120]}); using the cookie of the form "
        "posted by httpx")
    with contextlib.closing(browser_session(console)) as client:
        cookie = client.cookies.get("orch_session")
    page.context.add_cookies([{"name": "orch_session", "value": cookie, "url": url, "httpOnly": True,
                               "sameSite": "Strict"}])
    page.goto(url + "/ui/")
    return problem.strip()[:300]


def paint_times(page: Any, url: str, loads: int) -> dict[str, Any]:
    figures: dict[str, list[float]] = {"fcp": [], "ttfb": [], "dcl": [], "load": []}
    for _ in range(loads):
        page.goto(url, wait_until="load")
        for key, value in page.evaluate(FCP_JS).items():
            if value is not None:
                figures[key].append(value)
    return {f"{key}_ms": percentiles(values) for key, values in figures.items()} | {"loads": loads}


async def dispatch_at(port: int, token: str, rate: float, seconds: float) -> list[tuple[str, float]]:
    """``POST /dispatch`` at ``rate``/s, open loop on keep-alive sockets; (task id, acknowledged at, epoch
    ms) for each 202."""
    body = json.dumps({"core_id": "bench-live", "action": "noop"}).encode()
    request = (f"POST /dispatch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nAuthorization: Bearer {token}\r\n\r\n").encode() + body
    pool = [await asyncio.open_connection("127.0.0.1", port) for _ in range(LIVE_CONNECTIONS)]
    due: asyncio.Queue[float | None] = asyncio.Queue()
    acks: list[tuple[str, float]] = []
    failures: Counter[str] = Counter()
    began = time.perf_counter() + 0.05

    async def schedule() -> None:
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            due.put_nowait(0.0)
        for _ in pool:
            due.put_nowait(None)

    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await due.get() is not None:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            payload = await reader.readexactly(length)
            acked = time.time() * 1000
            if head.split(b" ", 2)[1] != b"202":
                failures[head.split(b" ", 2)[1].decode()] += 1
                continue
            acks.append((json.loads(payload)["task_id"], acked))

    await asyncio.gather(schedule(), *(send(*connection) for connection in pool))
    for _, writer in pool:
        writer.close()
    if failures:
        say(f"    dispatch answers other than 202: {dict(failures)}")
    return acks


def lag_figures(acks: list[tuple[str, float]], seen: dict[str, float]) -> dict[str, Any]:
    """Two lags. Shown: acknowledgement to the task's own row appearing, for the tasks that ever appear
    (at 100/s a 50-row page refreshed about once a second cannot show every task). Caught up: for every
    task, acknowledgement to the page first showing that task or a newer one, i.e. how stale the page is."""
    acks = sorted(acks, key=lambda item: item[1])
    shown = [seen[task] - at for task, at in acks if task in seen]
    caught_up: list[float] = []
    newest_seen = float("inf")
    for task, at in reversed(acks):
        newest_seen = min(newest_seen, seen.get(task, float("inf")))
        if newest_seen != float("inf"):
            caught_up.append(newest_seen - at)
    return {"dispatched": len(acks), "rows_appeared": len(shown), "shown_lag_ms": percentiles(shown),
            "caught_up_lag_ms": percentiles(caught_up), "never_caught_up": len(acks) - len(caught_up)}


def live_lag(console: Console, page: Any, sizes: Sizes) -> dict[str, Any]:
    page.goto(console.server.url + "/ui/tasks", wait_until="load")
    time.sleep(2.0)  # the page's EventSource connects after load; nothing on the page says when
    page.evaluate(OBSERVE_JS)
    acks: list[tuple[str, float]] = []
    failure: list[BaseException] = []

    def client() -> None:  # its own thread and loop: Playwright's sync API owns this thread's loop
        try:
            acks.extend(asyncio.run(dispatch_at(console.server.port, console.token, sizes.live_rate,
                                                sizes.live_seconds)))
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            failure.append(exc)

    offset = console.log.stat().st_size
    began = time.monotonic()
    thread = threading.Thread(target=client)
    thread.start()
    cpu_before = console.server.cpu()
    thread.join()
    wall = time.monotonic() - began
    if failure:
        raise BenchError(f"the dispatch client failed: {failure[0]!r}")
    time.sleep(3.0)  # the page's last refresh after the last event
    seen = page.evaluate("() => window.__benchSeen")
    rows = [ms for path, status, ms in access_durations(console.log, offset) if path == "/ui/tasks/rows"]
    return {**lag_figures(acks, seen), "rate": sizes.live_rate, "seconds": sizes.live_seconds,
            "achieved_per_s": round(len(acks) / wall, 1), "server_cpu_s": round(console.server.cpu() - cpu_before, 2),
            "rows_refreshes": len(rows), "rows_refresh_server_ms": percentiles(rows)}


def screenshots(page: Any, anonymous: Any, url: str, out: Path, task_id: str) -> list[str]:
    from orch.api.console.routes import NAV

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    anonymous.goto(url + "/ui/login", wait_until="load")
    anonymous.screenshot(path=str(out / "login.png"), full_page=True)
    saved.append("login.png")
    for path in [p for p, _, _ in NAV] + [f"/ui/tasks/{task_id}"]:
        name = "task-detail" if path.endswith(task_id) else (path.removeprefix("/ui/").strip("/") or "overview")
        response = page.goto(url + path, wait_until="load")
        if response is None or response.status >= 400:
            say(f"    {path}: HTTP {response.status if response else '?'}, screenshot taken anyway")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / f"{name}.png"), full_page=True)
        saved.append(f"{name}.png")
    return saved


def browser(console: Console, sizes: Sizes, out: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    url = console.server.url
    errors: list[str] = []
    task_id = httpx.get(url + "/tasks?limit=1", headers={"Authorization": f"Bearer {console.token}"},
                        timeout=30).json()["tasks"][0]["task_id"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            context = chromium.new_context(viewport={"width": 1366, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            figures_login = log_in(page, console)
            say(f"(d) first contentful paint: /ui/ and /docs, {sizes.fcp_loads} loads each")
            figures: dict[str, Any] = {"version": chromium.version, "form_login_refused": figures_login,
                                       "overview": paint_times(page, url + "/ui/", sizes.fcp_loads),
                                       "tasks": paint_times(page, url + "/ui/tasks", sizes.fcp_loads),
                                       "docs": paint_times(page, url + "/docs", sizes.fcp_loads)}
            say(f"(e) live-update lag: POST /dispatch at {sizes.live_rate:.0f}/s for {sizes.live_seconds:.0f} s "
                f"with /ui/tasks open")
            figures["live"] = live_lag(console, page, sizes)
            say("(f) screenshots")
            anonymous = chromium.new_context(viewport={"width": 1366, "height": 900}).new_page()
            figures["screens"] = screenshots(page, anonymous, url, out / "console-screens", task_id)
        finally:
            chromium.close()
    figures["console_errors"] = errors[:20]
    return figures


# --- report --------------------------------------------------------------------------------------

def p95(figures: dict[str, Any], key: str = "p95") -> float | None:
    return figures.get(key) if figures.get("n") else None


def ms_cell(figures: dict[str, Any]) -> str:
    if not figures.get("n"):
        return "–"
    return f"{figures['p50']:.1f} / {figures['p95']:.1f} / {figures['p99']:.1f}"


def judged(value: float | None, goal: float, below: bool = True) -> str:
    if value is None:
        return "no figure"
    return verdict(value < goal if below else value >= goal)


def markdown(report: dict[str, Any]) -> str:
    db, times, web = report["database"], report["server_time"], report["browser"]
    live = web["live"]
    rows: list[tuple[str, str, str, str, str]] = []
    goals = {"overview": GOAL_OVERVIEW_P95_MS, "tasks": GOAL_TASKS_P95_MS, "tasks_filtered": GOAL_FILTERED_P95_MS}
    labels = {"overview": "`/ui/` overview", "overview_live": "`/ui/overview/live` (live fragment)",
              "tasks": "`/ui/tasks` first page", "tasks_rows": "`/ui/tasks/rows` (live refresh fragment)",
              "tasks_filtered": "`/ui/tasks?status=failed&core_id=…`",
              "tasks_deep": f"`/ui/tasks?cursor=…` ({times['deep_pages']} pages deep)",
              "api_tasks": "baseline: `GET /tasks?limit=50` (JSON)",
              "api_tasks_filtered": "baseline: `GET /tasks?limit=50&status=failed&core_id=…`",
              "api_tasks_deep": f"baseline: `GET /tasks?limit=50&cursor=…` ({times['deep_pages']} deep)",
              "api_health_detailed": "`GET /health?detailed=true` (the overview's health section)",
              "healthz": "baseline: `GET /healthz`"}
    labels.update({name: label for name, (label, _) in HARD_FILTERS.items()})
    goals.update(dict.fromkeys(HARD_FILTERS, GOAL_FILTERED_P95_MS))
    for name, label in labels.items():
        figures = times[name]
        goal = goals.get(name)
        server_p95 = p95(figures["server_ms"])
        rows.append((f"{label}: client p50 / p95 / p99 (ms); server p95 (access log)",
                     f"{ms_cell(figures['client_ms'])}; {fmt(server_p95, 1)}",
                     f"p95 < {goal:.0f} ms" if goal else "–",
                     judged(p95(figures["client_ms"]), goal) if goal else "–",
                     f"{figures['response_bytes']:,} B; server CPU {figures['server_cpu_ms_per_request']} ms/request"))
    for name, label in (("overview", "FCP of `/ui/` in Chromium"), ("tasks", "FCP of `/ui/tasks`"),
                        ("docs", "baseline: FCP of `/docs` (Swagger UI, local assets)")):
        fcp = web[name]["fcp_ms"]
        rows.append((f"{label}, {web[name]['loads']} loads: p50 / p95 / p99 (ms)", ms_cell(fcp),
                     f"p95 < {GOAL_FCP_MS:.0f} ms" if name == "overview" else "–",
                     judged(p95(fcp), GOAL_FCP_MS) if name == "overview" else "–",
                     f"TTFB p50 {fmt(web[name]['ttfb_ms'].get('p50'), 1)} ms"))
    rows.append((f"live: page caught up with a task (ack → that task or a newer one shown), "
                 f"{live['rate']:.0f}/s for {live['seconds']:.0f} s, p50 / p95 / p99 (ms)",
                 ms_cell(live["caught_up_lag_ms"]), f"p95 < {GOAL_LAG_P95_MS:.0f} ms",
                 judged(p95(live["caught_up_lag_ms"]), GOAL_LAG_P95_MS),
                 f"{live['achieved_per_s']}/s achieved; {live['never_caught_up']} never"))
    rows.append(("live: ack → the task's own row shown, p50 / p95 / p99 (ms)", ms_cell(live["shown_lag_ms"]),
                 "–", "–", f"{live['rows_appeared']:,} of {live['dispatched']:,} tasks ever shown; "
                 f"{live['rows_refreshes']} row refreshes"))
    rows.append((f"seed {db['tasks']:,} tasks + {db['events']:,} events (s); DB size (GB)",
                 f"{db['seed_s']}; {db['size_gb']}", "–", "–", "cached" if db["cached"] else "seeded this run"))
    rows.append(("DB size per million tasks (GB)", f"{db['gb_per_million_tasks']}", f"< {GOAL_GB_PER_MILLION:.0f}",
                 judged(db["gb_per_million_tasks"], GOAL_GB_PER_MILLION), "tasks with their events"))
    body = ["| figure | measured | goal | verdict | note |", "|---|---|---|---|---|",
            *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows)]
    plans = {name: plan for name, plan in report["plans"].items() if name != "sections_ms"}
    slow = [f"- {name}: {plan['call_ms']} ms in-process; slowest statement {s['ms']} ms: "
            f"`{'; '.join(s['plan'])}`" for name, plan in plans.items()
            for s in sorted(plan["statements"], key=lambda x: -x["ms"])[:1]]
    slow.append("- each data function alone, warm, median of 5 (ms): " + ", ".join(
        f"{name} {ms}" for name, ms in report["plans"]["sections_ms"].items()))
    machine = report["machine"]
    return "\n".join([
        f"## Console benchmark ({machine['cpu_count']} CPUs, {machine['platform']}, Chromium {web['version']})", "",
        f"`python -m orch.api.server` (one process) over a SQLite file with {db['tasks']:,} tasks; server time is "
        "the client's response time, one request at a time on one keep-alive loopback connection after "
        f"{report['sizes']['warmup']} warm-up requests ({report['sizes']['requests']} timed per route, a tenth as "
        "many for the filters no index serves), logged in "
        "as an admin through the login form (pages) or with a bearer token (JSON); the server's own figure is its "
        "access log's `duration_ms`. FCP: headless Chromium.", "",
        *body, "", "Query plans (in-process, best of 3):", *slow, "", *login_line(web),
        f"Browser console errors: {len(web['console_errors'])}. Load average (1 min) at start / end: "
        f"{machine['load_avg_1m']} / {report['load_avg_end']}; API RSS at the end {report['api_rss_mb']} MB.", ""])


def login_line(web: dict[str, Any]) -> list[str]:
    if not web.get("form_login_refused"):
        return ["The browser logged in through the form."]
    return [f"**The browser's form login was refused** ({web['form_login_refused']}); the browser was given the "
            "session cookie of the same form posted by httpx (no `Origin` header) so the rest could be measured."]


def write_report(report: dict[str, Any], out: Path) -> str:
    table = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_console.md").write_text(table, encoding="utf-8")
    (out / "bench_console.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return table


# --- main ----------------------------------------------------------------------------------------

def bench(workdir: Path, sizes: Sizes, out: Path, reseed: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": {**_machine_info(), "git": git_state()}, "sizes": asdict(sizes),
                              "goals": {"overview_p95_ms": GOAL_OVERVIEW_P95_MS, "tasks_p95_ms": GOAL_TASKS_P95_MS,
                                        "filtered_p95_ms": GOAL_FILTERED_P95_MS, "fcp_p95_ms": GOAL_FCP_MS,
                                        "live_lag_p95_ms": GOAL_LAG_P95_MS,
                                        "gb_per_million_tasks": GOAL_GB_PER_MILLION}}
    seeded, report["database"] = seeded_database(out / "console-db", sizes.tasks, reseed)
    procs = Processes(workdir / "logs")
    procs.log_dir.mkdir()
    try:
        console = start_console(workdir, procs, seeded)
        core = CORES[3]
        say(f"(b) server time: {sizes.requests} requests per route after {sizes.warmup} warm-up")
        report["server_time"] = server_times(console, sizes, core)
        say("(c) query plans")
        report["plans"] = query_plans(console, core)
        report["browser"] = browser(console, sizes, out)
        report["api_rss_mb"] = console.server.rss()
        report["load_avg_end"] = round(os.getloadavg()[0], 2)
    finally:
        procs.stop_all()
    return report


def _terminated(signum: int, _frame: object) -> None:
    raise BenchError(f"interrupted by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser, "fewer requests")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        parser.error(f"{CHROMIUM} not found; install Debian's chromium (no browser is downloaded)")
    sizes = QUICK if args.quick else DEFAULT
    if args.tasks is not None:
        if args.tasks < 10_000:
            parser.error("--tasks must be at least 10,000 (the deep page is 50 pages of 50 down)")
        sizes = Sizes(**{**asdict(sizes), "tasks": args.tasks})
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    signal.signal(signal.SIGTERM, _terminated)
    return run_bench("orch-bench-console-", lambda workdir: bench(workdir, sizes, args.out, args.reseed),
                     lambda report: write_report(report, args.out))


if __name__ == "__main__":
    sys.exit(main())
