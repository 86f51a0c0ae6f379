"""Queue scale benchmark: accept and claim latency with a million queued and a million finished tasks.

Issue 17 asks that, with 1,000,000 queued tasks (and with 1,000,000 finished ones), accepting a task and
claiming one stay within 2x of an empty queue, and that the database stays under the original system's
10 GB per million tasks. Three SQLite files, measured one after another in the same run:

- **empty**: the schema at head and nothing else (the baseline);
- **finished**: the console benchmark's seeded history (30 days, 1,000,000 tasks and ~3 M events, almost all
  ended; cached under ``<out>/console-db/`` and shared with ``bench_console.py``);
- **queued**: a copy of that file with every task queued again (never started, no lease).

Accepts go to a core of their own (the queue's depth is what grows) and to a seeded core (about 100,000
of the million queued on it, all ahead of the new task, which its wait estimate counts).

For each, the user's paths: ``POST /dispatch`` over HTTP to a real ``orch.api.server`` (one request at a time
on a keep-alive connection, client time), Prometheus' ``GET /metrics`` (:data:`SCRAPES` in a row, after the
timed calls: the first reads every figure, the domain collector may serve its costly task totals again to
those after it), and the dispatcher's claim as the worker runs it
(``TaskQueue.claim`` in this process against the same file while the API runs), each claimed task then
finished as the dispatcher would, so the queue stays in the same shape. The three APIs run side by side and
are measured in interleaved rounds, so the shared machine's load falls on every state alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from bench_api import ADMIN, BIN, PASSWORD, orch_env, run_cli, start
from bench_common import BenchError, machine_info, run_bench
from bench_console import add_seed_arguments, bring_forward, seeded_database
from bench_dispatch import Processes, free_port, percentiles, say, verdict

GOAL_RATIO = 2.0  # each loaded state's p50 within 2x of the empty queue's (issue 17)
GOAL_GB_PER_MILLION = 10.0  # the original system's size per million tasks
CORE = "SCALE_01"
DEEP_CORE = "WORK_AI_01"  # a seeded core: a tenth of the queued state's million is queued on it
STATES = ("empty", "finished", "queued")
SCRAPES = 5  # GET /metrics in a row per state
ROUND = 10  # calls per state per round: the states take turns, so a noisy minute hits them alike


def empty_database(path: Path) -> None:
    from orch.config.schema import DatabaseSettings
    from orch.storage.engine import get_engine
    from orch.storage.migrate import upgrade

    database = DatabaseSettings(url=f"sqlite:///{path}")
    upgrade(database, create_database=True)
    get_engine(database).dispose()


def requeue_everything(path: Path) -> int:
    """Every task of the copy queued again, as if none had started: a million-deep queue."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN")
        changed = db.execute("UPDATE tasks SET status = 'queued', started_at = NULL, finished_at = NULL, "
                             "lease_owner = NULL, lease_expires_at = NULL, attempts = 0, result = NULL, "
                             "error = NULL").rowcount
        db.execute("COMMIT")
    finally:
        db.close()
    return changed


def prepared(state: str, home: Path, seeded: Path, seeded_at: float) -> dict[str, Any]:
    """The state's database file in ``home/data/orch.db`` and what it holds."""
    target = home / "data" / "orch.db"
    target.parent.mkdir(parents=True)
    began = time.monotonic()
    if state == "empty":
        empty_database(target)
    else:
        shutil.copyfile(seeded, target)
        bring_forward(target, seeded_at)
        if state == "queued":
            requeue_everything(target)
    db = sqlite3.connect(target)
    try:
        counts = dict(db.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
    finally:
        db.close()
    return {"prepare_s": round(time.monotonic() - began, 1), "counts": counts,
            "size_gb": round(target.stat().st_size / 1e9, 3)}


class Target:
    """One state's running API, its token and the in-process queue on the same file."""

    def __init__(self, state: str, url: str, token: str, env: dict[str, str]) -> None:
        from orch.config.loader import load_settings
        from orch.dispatch.queue import TaskQueue

        self.state = state
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.settings = load_settings(environ=env, generate_secrets=False)
        self.queue = TaskQueue(self.settings)
        self.accept: list[float] = []
        self.accept_deep: list[float] = []
        self.claim: list[float] = []

    def accept_one(self, core: str = CORE) -> float:
        """``POST /dispatch`` of a no-op task to ``core``, client time in ms."""
        began = time.perf_counter()
        response = self.client.post("/dispatch", json={"core_id": core, "action": "noop", "params": {}})
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code not in (200, 201, 202):
            raise BenchError(f"({self.state}) POST /dispatch answered HTTP {response.status_code}: "
                             f"{response.text[:200]}")
        return elapsed

    def scrape(self) -> float:
        """``GET /metrics`` as Prometheus sends it, client time in ms."""
        began = time.perf_counter()
        response = self.client.get("/metrics")
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200 or b"orch_monitor_scrape_ok 1.0" not in response.content:
            raise BenchError(f"({self.state}) GET /metrics answered HTTP {response.status_code} without the "
                             f"domain metrics: {response.text[:200]}")
        return elapsed

    def claim_one(self) -> float:
        """The dispatcher's claim of one task, in ms; then its finish, so the queue keeps its shape."""
        began = time.perf_counter()
        claimed = self.queue.claim("bench-queue-scale", 1)
        elapsed = (time.perf_counter() - began) * 1000
        if not claimed:
            raise BenchError(f"({self.state}) a claim found nothing to take")
        self.queue.finish(claimed[0], "completed", result={"bench": True})
        return elapsed

    def close(self) -> None:
        from orch.storage.engine import get_engine

        self.client.close()
        get_engine(self.settings.database).dispose()


def start_state(workdir: Path, procs: Processes, state: str, seeded: Path, seeded_at: float) -> tuple[Target, dict]:
    home = workdir / state
    say(f"({state}) preparing the database")
    facts = prepared(state, home, seeded, seeded_at)
    say(f"    {facts['counts']} in {facts['prepare_s']} s ({facts['size_gb']} GB)")
    port = free_port()
    # the default depth limit (dispatch.max_queue_depth, 10,000) would refuse every task of a million-deep queue
    env = {**orch_env(home, port), "ORCH_DISPATCH__MAX_QUEUE_DEPTH": "100000000"}
    run_cli([str(BIN / "orch"), "user", "create-admin", "--username", ADMIN, "--password-stdin"], env, PASSWORD)
    server = start(procs, f"api-{state}", [sys.executable, "-m", "orch.api.server"], env, port, "/healthz")
    response = httpx.post(server.url + "/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=30)
    if response.status_code != 200:
        raise BenchError(f"POST /auth/token answered HTTP {response.status_code}: {response.text[:200]}")
    return Target(state, server.url, str(response.json()["access_token"]), env), facts


def bench(workdir: Path, tasks: int, warmup: int, requests: int, out: Path, reseed: bool) -> dict[str, Any]:
    """The three states side by side, measured in interleaved rounds so the shared machine's load falls
    on each alike: each round sends ``ROUND`` dispatches and then ``ROUND`` claims to every state in turn."""
    (workdir / "logs").mkdir()
    procs = Processes(workdir / "logs")
    seeded, seed_facts = seeded_database(out / "console-db", tasks, reseed)
    seeded_at = seed_facts.get("seeded_at", seeded.stat().st_mtime - seed_facts["seed_s"])
    states: dict[str, Any] = {}
    targets: list[Target] = []
    try:
        for state in STATES:
            target, states[state] = start_state(workdir, procs, state, seeded, seeded_at)
            targets.append(target)
        say(f"{warmup} warm-up and {requests} timed dispatches and claims per state, in rounds of {ROUND}")
        for done in range(0, warmup + requests, ROUND):
            for target in targets:
                for n in range(done, min(done + ROUND, warmup + requests)):
                    elapsed = target.accept_one()
                    if n >= warmup:
                        target.accept.append(elapsed)
                    elapsed = target.accept_one(DEEP_CORE)
                    if n >= warmup:
                        target.accept_deep.append(elapsed)
                for n in range(done, min(done + ROUND, warmup + requests)):
                    elapsed = target.claim_one()
                    if n >= warmup:
                        target.claim.append(elapsed)
        for target in targets:
            scrapes = [target.scrape() for _ in range(SCRAPES)]
            states[target.state]["metrics_ms"] = {"first": round(scrapes[0], 1),
                                                  "rest_p50": percentiles(scrapes[1:])["p50"]}
            say(f"({target.state}) GET /metrics {scrapes[0]:.0f} ms, then {', '.join(f'{s:.0f}' for s in scrapes[1:])}")
        for target in targets:
            states[target.state].update(accept_ms=percentiles(target.accept),
                                        accept_deep_ms=percentiles(target.accept_deep),
                                        claim_ms=percentiles(target.claim))
            say(f"({target.state}) accept p50 {states[target.state]['accept_ms']['p50']:.1f} ms, onto "
                f"{DEEP_CORE} {states[target.state]['accept_deep_ms']['p50']:.1f} ms, "
                f"claim p50 {states[target.state]['claim_ms']['p50']:.1f} ms")
    finally:
        for target in targets:
            target.close()
        procs.stop_all()
    empty = states["empty"]
    for state in ("finished", "queued"):
        for key in ("accept_ms", "accept_deep_ms", "claim_ms"):
            states[state][f"{key}_ratio"] = round(states[state][key]["p50"] / empty[key]["p50"], 2)
    return {"benchmark": "queue_scale", "machine": machine_info(), "tasks": tasks, "warmup": warmup,
            "requests": requests, "seed": seed_facts, "states": states,
            "gb_per_million_tasks": seed_facts["gb_per_million_tasks"]}


def markdown(report: dict[str, Any]) -> str:
    states = report["states"]
    rows = []
    for key, label in (("accept_ms", "`POST /dispatch` (HTTP, one at a time)"),
                       ("accept_deep_ms", f"`POST /dispatch` onto a seeded core ({DEEP_CORE})"),
                       ("claim_ms", "dispatcher claim of one task")):
        for state in STATES:
            figures = states[state][key]
            ratio = states[state].get(f"{key}_ratio")
            goal = "baseline" if state == "empty" else f"p50 ≤ {GOAL_RATIO:g}× empty"
            judged = "–" if ratio is None else f"{ratio}× {verdict(ratio <= GOAL_RATIO)}"
            rows.append(f"| {label}, {state} | {figures['p50']:.1f} / {figures['p95']:.1f} / {figures['p99']:.1f} "
                        f"| {goal} | {judged} |")
    for state in STATES:
        scrape = states[state].get("metrics_ms")
        if scrape:
            rows.append(f"| `GET /metrics`, {state}: the first of {SCRAPES} in a row / the median of the others | "
                        f"{scrape['first']:.1f} / {scrape['rest_p50']:.1f} | – | – |")
    size = report["gb_per_million_tasks"]
    rows.append(f"| database size per million tasks (GB, with their events) | {size} | < {GOAL_GB_PER_MILLION:g} "
                f"| {verdict(size < GOAL_GB_PER_MILLION)} |")
    machine = report["machine"]
    return "\n".join([
        f"## Queue scale benchmark ({machine['cpu_count']} CPUs, load {machine['load_avg_1m']})", "",
        f"SQLite; {report['tasks']:,} tasks seeded; {report['requests']} timed calls after {report['warmup']} "
        "warm-up calls per figure; p50 / p95 / p99 in ms; each loaded state against the empty queue of the same "
        "run.", "",
        "| figure | p50 / p95 / p99 (ms) | goal | verdict |", "|---|---|---|---|", *rows, ""])


def write(report: dict[str, Any], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "bench_queue_scale.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "bench_queue_scale.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_seed_arguments(parser, "fewer calls")
    args = parser.parse_args(argv)
    tasks = args.tasks or (50_000 if args.quick else 1_000_000)
    warmup, requests = (5, 40) if args.quick else (20, 300)
    return run_bench("orch-bench-queue-scale-",
                     lambda workdir: bench(workdir, tasks, warmup, requests, args.out, args.reseed),
                     lambda report: write(report, args.out))


if __name__ == "__main__":
    sys.exit(main())
