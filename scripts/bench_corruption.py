#!/usr/bin/env python
"""Benchmark: how long a live ``orch up`` takes to notice that its SQLite database was damaged (issue 15, item 5).

Each round is a fresh ``orch up`` in an ORCH_HOME of its own (started as :mod:`bench_monitoring`'s ``--up-only``
phase starts it) with ``monitoring.interval: 5`` over SQLite: an admin made with the CLI, a few hundred ``noop``
tasks dispatched through the API so the file has pages beyond the schema, two healthy sweeps; then, at a
random point of the sweep interval, the live ``data/orch.db`` is damaged as issue 15 damaged it (4 KiB blocks
of random bytes written at random page offsets past the first page, then fsync; the seed is printed, so a run
can be repeated). From the moment of damage, on the wall clock:

- **health**: ``GET /health?detailed=true`` says the database component is corrupt;
- **alert**: ``GET /alerts`` (as the admin) lists ``database_corrupt`` firing;
- **refusal**: ``POST /dispatch`` (one every 100 ms from the damage on) answers 503 with the recovery hint;
  the dispatches accepted before that are counted.

Every round starts a new stack (no file is restored). **Baseline**, in the same run: ``orch db check`` (the
CLI, wall time) on a copy of the damaged file taken right after the damage, i.e. the cost of the check itself.
Goal: damage -> alert firing within one sweep interval (5 s).

Writes ``<out>/bench_corruption.{json,md}`` (``--out``, default ``bench_results``).

    python scripts/bench_corruption.py [--rounds 3] [--pages 40] [--tasks 300] [--seed 15] [--timeout 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from bench_common import BenchError, clean_environ, machine_info, run_bench, spread
from bench_monitoring import BIN, INTERVAL, RESULTS, UpStack, stamp, wait_for

ADMIN, PASSWORD = "bench-admin", "Bench-corruption-2026!"
DISPATCH = {"core_id": "bench-core", "action": "noop"}
DISPATCH_EVERY = 0.1
POLL_EVERY = 0.1
HINT = "orch recover"  # orch.storage.engine.RECOVERY_HINT names it
HOPS = ("health_corrupt_s", "alert_firing_s", "dispatch_refused_s")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cli(argv: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "orch"), *argv], env=env, input=stdin, capture_output=True, text=True,
                          timeout=300, check=False)


class Api:
    """The stack's ORCH API as the admin: a token from ``POST /auth/token``, one client per thread."""

    def __init__(self, stack: UpStack) -> None:
        made = cli(["user", "create-admin", "--username", ADMIN, "--password-stdin"], stack.env, PASSWORD)
        if made.returncode != 0:
            raise BenchError("orch user create-admin failed", (made.stderr or made.stdout).splitlines()[-8:])
        self.url = f"http://127.0.0.1:{stack.api_port}"
        answer = httpx.post(f"{self.url}/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=20)
        if answer.status_code != 200:
            raise BenchError(f"POST /auth/token answered HTTP {answer.status_code}", [answer.text[:300]])
        self.headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=10)


def fill(api: Api, tasks: int) -> None:
    with api.client() as client:
        for start in range(0, tasks, 100):
            batch = {"tasks": [DISPATCH] * min(100, tasks - start)}
            answer = client.post("/dispatch/batch", json=batch)
            if answer.status_code != 202:
                raise BenchError(f"POST /dispatch/batch answered HTTP {answer.status_code}", [answer.text[:300]])


def damage(path: Path, pages: int, chance: random.Random) -> dict[str, Any]:
    """Random bytes over ``pages`` distinct pages past the first (the header stays readable), then fsync."""
    with path.open("r+b") as handle:
        header = handle.read(100)
        page_size = int.from_bytes(header[16:18], "big") or 65536
        total = os.fstat(handle.fileno()).st_size // page_size
        chosen = sorted(chance.sample(range(1, total), min(pages, total - 1)))
        for page in chosen:
            handle.seek(page * page_size)
            handle.write(chance.randbytes(page_size))
        handle.flush()
        os.fsync(handle.fileno())
    return {"page_size": page_size, "file_pages": total, "damaged_pages": chosen}


class Dispatcher(threading.Thread):
    """``POST /dispatch`` every 100 ms from the damage on: when was the first refusal with the hint, and how many
    were accepted before it (and after it: none should be)."""

    def __init__(self, api: Api, since: float) -> None:
        super().__init__(daemon=True)
        self.api, self.since, self.halt = api, since, threading.Event()
        self.sent: list[tuple[float, int, str]] = []

    def run(self) -> None:
        with self.api.client() as client:
            beat = self.since
            while not self.halt.is_set():
                try:
                    answer = client.post("/dispatch", json=DISPATCH)
                    self.sent.append((time.monotonic() - self.since, answer.status_code, answer.text[:300]))
                except httpx.HTTPError as exc:
                    self.sent.append((time.monotonic() - self.since, 0, type(exc).__name__))
                beat += DISPATCH_EVERY
                self.halt.wait(max(0.0, beat - time.monotonic()))

    def refused_at(self) -> float | None:
        return next((t for t, status, text in self.sent if status == 503 and HINT in text), None)

    def figures(self) -> dict[str, Any]:
        refused = self.refused_at()
        before = [s for t, s, _ in self.sent if refused is None or t < refused]
        after = [s for t, s, _ in self.sent if refused is not None and t > refused]
        statuses: dict[str, int] = {}
        for _, status, _ in self.sent:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        other = next((text for _, status, text in self.sent if status not in (202, 503) or
                      (status == 503 and HINT not in text)), None)
        return {"dispatches_sent": len(self.sent), "statuses": statuses,
                "accepted_before_refusal": before.count(202), "accepted_after_refusal": after.count(202),
                "first_refusal": next((text for _, status, text in self.sent if status == 503 and HINT in text), None),
                "first_other_answer": other}


def watch(api: Api, damaged: float, timeout: float, marker: Path) -> dict[str, Any]:
    """Poll ``/health?detailed=true`` and ``/alerts?state=firing`` until both report the damage (or ``timeout``);
    the marker as it was when ``/health`` first reported it says which part of ORCH found the damage."""
    found: dict[str, Any] = {"health_corrupt_s": None, "health_whole_page_503_s": None, "alert_firing_s": None,
                             "health_detail": None,
                             "alerts_errors": {}, "marker_path": str(marker), "first_marker": None}
    with api.client() as client:
        while time.monotonic() - damaged < timeout:
            if found["health_corrupt_s"] is None:
                with_error(found, "health_errors", lambda: health_hop(client, damaged, found))
            if found["alert_firing_s"] is None:
                with_error(found, "alerts_errors", lambda: alert_hop(client, damaged, found))
            if found["health_corrupt_s"] is not None and found["alert_firing_s"] is not None:
                break
            time.sleep(POLL_EVERY)
    return found


def with_error(found: dict[str, Any], key: str, poll: Any) -> None:
    """A poll that failed is counted by its cause (``/alerts`` reads the damaged file too), not fatal."""
    try:
        poll()
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        errors = found.setdefault(key, {})
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1


def health_hop(client: httpx.Client, damaged: float, found: dict[str, Any]) -> None:
    answer = client.get("/health", params={"detailed": "true"})
    body = answer.json()
    # the whole page refused (its counts read the damaged file): it says so, but with no database component
    if "components" not in body and "corrupt" in str(body.get("detail", "")) and not found["health_whole_page_503_s"]:
        found["health_whole_page_503_s"] = round(time.monotonic() - damaged, 2)
    database = body["components"]["database"]
    if database["status"] != "ok" and "corrupt" in str(database.get("detail", "")):
        found["health_corrupt_s"] = round(time.monotonic() - damaged, 2)
        found["health_detail"] = database.get("detail")
        marker = Path(found["marker_path"])
        with contextlib.suppress(OSError, ValueError):  # the sweep may be rewriting it: the detail says the same
            found["first_marker"] = json.loads(marker.read_text())


def alert_hop(client: httpx.Client, damaged: float, found: dict[str, Any]) -> None:
    answer = client.get("/alerts", params={"state": "firing"})
    if answer.status_code != 200:
        errors = found["alerts_errors"]
        errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
        found.setdefault("alerts_error_text", answer.text[:300])
        return
    if any(item["alert_name"] == "database_corrupt" for item in answer.json()["items"]):
        found["alert_firing_s"] = round(time.monotonic() - damaged, 2)


def sweeps_after(stack: UpStack, damaged_wall: float) -> list[dict[str, Any]]:
    """The sweeps that started after the damage: when (s after it), how they ended, and which of their task
    runs did not complete (the hop that lost the alert)."""
    runs = sorted((r for r in stack.sweeps() if r["start_time"] and stamp(r["start_time"]) > damaged_wall),
                  key=lambda r: stamp(r["start_time"]) or 0.0)[:4]
    found = []
    for run in runs:
        tasks = stack.call("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200})
        broken = sorted({f"{t['name'].rsplit('-', 1)[0]}: {t['state']['type']}" for t in tasks
                         if t["state"]["type"] not in ("COMPLETED", "RUNNING", "PENDING", "SCHEDULED")})
        found.append({"started_s": round(stamp(run["start_time"]) - damaged_wall, 2), "state": run["state"]["type"],
                      "message": (run["state"].get("message") or "")[:200], "tasks_not_completed": broken})
    return found


def db_check(copy_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """``orch db check`` on the damaged copy, in a home of its own (its marker lands beside the copy)."""
    config = copy_dir / "check.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{copy_dir / 'orch.db'}"}}))
    check_env = {**env, "ORCH_HOME": str(copy_dir), "ORCH_CONFIG_PATH": str(config)}
    started = time.perf_counter()
    done = cli(["db", "check"], check_env)
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "exit": done.returncode,
            "says": ((done.stderr or done.stdout).strip().splitlines() or [""])[-1][:300]}


def one_round(workdir: Path, n: int, args: argparse.Namespace, chance: random.Random) -> dict[str, Any]:
    config = {"monitoring": {"interval": INTERVAL,
                             "alert_thresholds": {"cpu_percent": 100, "memory_percent": 100}},
              # a dispatch every 100 ms plus two polls would pass the default 100 a minute
              "security": {"rate_limit": {"requests_per_minute": 100000, "burst_size": 1000}}}
    stack = UpStack(workdir / f"round-{n}", config, clean_environ())
    try:
        say(f"round {n}: starting orch up in {stack.home}")
        stack.start()
        api = Api(stack)
        fill(api, args.tasks)
        filled = time.time()
        say(f"round {n}: {args.tasks} noop tasks dispatched; waiting for two healthy sweeps")
        wait_for(lambda: sum(1 for r in stack.sweeps() if r["state"]["type"] == "COMPLETED"
                             and r["start_time"] and stamp(r["start_time"]) > filled) >= 2,
                 60 + 3 * INTERVAL, "two healthy sweeps after the tasks")
        settings = stack.settings()
        database = Path(settings.database.url.removeprefix("sqlite:///"))
        marker = Path(f"{database}-corrupt")
        if marker.exists():
            raise BenchError(f"round {n}: {marker} exists before any damage")
        time.sleep(chance.uniform(0, INTERVAL))  # a random point of the sweep interval
        hurt = damage(database, args.pages, chance)
        damaged, damaged_wall = time.monotonic(), time.time()
        dispatcher = Dispatcher(api, damaged)
        dispatcher.start()
        copy_dir = workdir / f"copy-{n}"
        copy_dir.mkdir()
        for suffix in ("", "-wal"):
            if Path(f"{database}{suffix}").exists():
                shutil.copyfile(f"{database}{suffix}", copy_dir / f"orch.db{suffix}")
        say(f"round {n}: damaged {len(hurt['damaged_pages'])} of {hurt['file_pages']} pages; watching")
        seen = watch(api, damaged, args.timeout, marker)
        if seen["health_corrupt_s"] is not None and seen["alert_firing_s"] is not None:
            # the refusal follows the marker the health hop saw: give it a moment, not the whole timeout
            with contextlib.suppress(BenchError):
                wait_for(dispatcher.refused_at, 5, "a refused dispatch")
        dispatcher.halt.set()
        dispatcher.join(15)
        recorded = json.loads(marker.read_text()) if marker.exists() else None
        result = {"round": n, **hurt, **seen, "dispatch_refused_s": _round(dispatcher.refused_at()),
                  **dispatcher.figures(), "last_marker": recorded,
                  "sweeps_after_damage": sweeps_after(stack, damaged_wall)}
        say(f"round {n}: health {result['health_corrupt_s']} s, alert {result['alert_firing_s']} s, refusal "
            f"{result['dispatch_refused_s']} s, accepted before it {result['accepted_before_refusal']}, "
            f"found by {found_by(result)}; sweeps after: {result['sweeps_after_damage']}")
    finally:
        stack.stop()
    result["db_check_on_damaged_copy"] = db_check(copy_dir, clean_environ())
    say(f"round {n}: orch db check on the copy: {result['db_check_on_damaged_copy']}")
    return result


def found_by(result: dict[str, Any]) -> str:
    return str((result["first_marker"] or result["last_marker"] or {}).get("found_by", "nothing"))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def bench(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    chance = random.Random(args.seed)
    say(f"seed {args.seed}, {args.rounds} round(s), {args.pages} pages each, {args.tasks} tasks, interval {INTERVAL} s")
    rounds = [one_round(workdir, n, args, chance) for n in range(1, args.rounds + 1)]
    summary: dict[str, Any] = {}
    for hop in HOPS:
        values = [r[hop] for r in rounds if r[hop] is not None]
        summary[hop] = {**(spread(values) if values else {}), "missed": len(rounds) - len(values)}
    checks = [r["db_check_on_damaged_copy"]["wall_s"] for r in rounds]
    summary["db_check_wall_s"] = spread(checks)
    summary["accepted_before_refusal"] = [r["accepted_before_refusal"] for r in rounds]
    goals = {"alert_firing_within_1_interval_every_round": all(
        r["alert_firing_s"] is not None and r["alert_firing_s"] <= INTERVAL for r in rounds),
        "health_corrupt_within_1_interval_every_round": all(
        r["health_corrupt_s"] is not None and r["health_corrupt_s"] <= INTERVAL for r in rounds),
        "dispatch_refused_within_1_interval_every_round": all(
        r["dispatch_refused_s"] is not None and r["dispatch_refused_s"] <= INTERVAL for r in rounds),
        "no_dispatch_accepted_after_refusal": all(r["accepted_after_refusal"] == 0 for r in rounds)}
    return {"machine": info, "interval_s": INTERVAL, "seed": args.seed, "pages": args.pages, "tasks": args.tasks,
            "timeout_s": args.timeout, "rounds": rounds, "summary": summary, "goals": goals, "out": str(args.out)}


def cell(value: float | None) -> str:
    return "missed" if value is None else f"{value}"


def write(report: dict[str, Any]) -> str:
    out = Path(report.pop("out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_corruption.json").write_text(json.dumps(report, indent=2) + "\n")
    info, summary = report["machine"], report["summary"]
    rows = ["| figure | ORCH | baseline |", "|---|---|---|"]
    for r in report["rounds"]:
        rows.append(f"| round {r['round']} ({len(r['damaged_pages'])} of {r['file_pages']} pages damaged): damage → "
                    f"/health corrupt / → `database_corrupt` firing / → `POST /dispatch` 503 with hint (s) | "
                    f"{cell(r['health_corrupt_s'])} / {cell(r['alert_firing_s'])} / {cell(r['dispatch_refused_s'])} "
                    f"| – |")
        rows.append(f"| … `/health?detailed=true` answered 503 \"database is corrupt\" with no components at (s); "
                    f"its polls that failed | {cell(r['health_whole_page_503_s'])}; "
                    f"{r.get('health_errors') or 0} | – |")
        rows.append(f"| … dispatches accepted before the refusal (after it); damage found by | "
                    f"{r['accepted_before_refusal']} ({r['accepted_after_refusal']}); "
                    f"{found_by(r)} | – |")
        failed = sorted({task for sweep in r["sweeps_after_damage"] for task in sweep["tasks_not_completed"]})
        states = ", ".join(f"{sweep['started_s']} s {sweep['state']}" for sweep in r["sweeps_after_damage"])
        rows.append(f"| … sweeps after the damage (start, state); their task runs that did not complete | "
                    f"{states or 'none'}; {', '.join(failed) or 'none'} | – |")
        rows.append(f"| … `orch db check` on the damaged copy, wall (s), verdict | – | "
                    f"{r['db_check_on_damaged_copy']['wall_s']}, exit {r['db_check_on_damaged_copy']['exit']} |")
    for hop, label in zip(HOPS, ("/health corrupt", "`database_corrupt` firing", "dispatch refused"), strict=True):
        figures = summary[hop]
        shown = (f"{figures['median']} ({figures['min']}–{figures['max']})" if "median" in figures else "–")
        rows.append(f"| damage → {label}, median (min–max) (s); rounds missed | {shown}; {figures['missed']} | – |")
    check = summary["db_check_wall_s"]
    rows.append(f"| `orch db check` on the damaged copy, median (min–max) (s) | – | "
                f"{check['median']} ({check['min']}–{check['max']}) |")
    goals = [f"- {name} ({INTERVAL} s): {'PASS' if ok else 'FAIL'}" for name, ok in report["goals"].items()]
    header = (f"{info['cpu_count']} CPUs, Python {info['python']}, Prefect {info['prefect']}, {info['timestamp']}, "
              f"load average at start {info['load_avg_1m']}, at end {os.getloadavg()[0]:.2f}; seed {report['seed']}, "
              f"monitoring.interval {INTERVAL} s, a fresh `orch up` per round, total {report.get('total_s')} s.")
    text = "\n".join([header, "", *rows, "", *goals]) + "\n"
    (out / "bench_corruption.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="damage rounds, each on a fresh `orch up`")
    parser.add_argument("--pages", type=int, default=40, help="pages overwritten with random bytes (issue 15: 40)")
    parser.add_argument("--tasks", type=int, default=300, help="noop tasks dispatched before the healthy sweeps")
    parser.add_argument("--seed", type=int, default=15, help="seed of the damage and of when in the interval")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a round waits for detection")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where bench_corruption.{json,md} go")
    args = parser.parse_args(argv)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return run_bench("bench-corruption-", lambda workdir: bench(workdir, args), write)


if __name__ == "__main__":
    sys.exit(main())
